//! The drawing surface: plotters' bitmap backend with text laid out and
//! rasterised by ab_glyph from the embedded font.

use super::*;

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The embedded font, parsed once.
pub(super) fn font_data() -> anyhow::Result<&'static FontRef<'static>> {
    static PARSED: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    PARSED.get_or_init(|| FontRef::try_from_slice(FONT).ok()).as_ref().context("the embedded chart font failed to load")
}

/// plotters' bitmap backend with text of our own: glyphs placed at their
/// bearings, kerned, anti-aliased, any size or quarter turn.
pub(super) struct Canvas<'a> {
    pub(super) bitmap: BitMapBackend<'a>,
    pub(super) font: &'static FontRef<'static>,
}

impl Canvas<'_> {
    /// Each glyph's outline at its place, the pen starting at (0, ascent),
    /// and the text's advance width and line height.
    fn layout(&self, text: &str, size: f64) -> (Vec<ab_glyph::OutlinedGlyph>, f32, f32) {
        let font = self.font.as_scaled(size as f32);
        let mut glyphs = Vec::with_capacity(text.len());
        let mut pen = 0f32;
        let mut previous = None;
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(previous) = previous {
                pen += font.kern(previous, id);
            }
            if let Some(outline) =
                font.outline_glyph(id.with_scale_and_position(font.scale(), point(pen, font.ascent())))
            {
                glyphs.push(outline);
            }
            pen += font.h_advance(id);
            previous = Some(id);
        }
        (glyphs, pen, font.ascent() - font.descent())
    }
}

impl DrawingBackend for Canvas<'_> {
    type ErrorType = BitMapBackendError;

    fn get_size(&self) -> (u32, u32) {
        self.bitmap.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<BitMapBackendError>> {
        self.bitmap.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<BitMapBackendError>> {
        self.bitmap.present()
    }

    fn draw_pixel(
        &mut self,
        at: BackendCoord,
        colour: BackendColor,
    ) -> Result<(), DrawingErrorKind<BitMapBackendError>> {
        self.bitmap.draw_pixel(at, colour)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<BitMapBackendError>> {
        self.bitmap.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<BitMapBackendError>> {
        self.bitmap.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        at: BackendCoord,
    ) -> Result<(), DrawingErrorKind<BitMapBackendError>> {
        let colour = style.color();
        if colour.alpha == 0.0 {
            return Ok(());
        }
        let (glyphs, width, height) = self.layout(text, style.size());
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -width / 2.0,
            HPos::Right => -width,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0.0,
            VPos::Center => -height / 2.0,
            VPos::Bottom => -height,
        };
        let (dx, dy) = (dx.round() as i32, dy.round() as i32);
        let turn = style.transform();
        let mut result = Ok(());
        for glyph in &glyphs {
            let bounds = glyph.px_bounds();
            glyph.draw(|x, y, coverage| {
                if coverage <= 0.0 || result.is_err() {
                    return;
                }
                let (x, y) = turn.transform(bounds.min.x as i32 + x as i32 + dx, bounds.min.y as i32 + y as i32 + dy);
                let pixel = BackendColor { alpha: colour.alpha * f64::from(coverage.min(1.0)), rgb: colour.rgb };
                result = self.bitmap.draw_pixel((at.0 + x, at.1 + y), pixel);
            });
        }
        result
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<BitMapBackendError>> {
        let (_, width, height) = self.layout(text, style.size());
        Ok((width.ceil() as u32, height.ceil() as u32))
    }

    fn blit_bitmap(
        &mut self,
        at: BackendCoord,
        size: (u32, u32),
        source: &[u8],
    ) -> Result<(), DrawingErrorKind<BitMapBackendError>> {
        self.bitmap.blit_bitmap(at, size, source)
    }
}
