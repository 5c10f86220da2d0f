//! `/apikey usage` and `/apikey requests`: a key's counters and its request
//! log. Parses the options, calls the service, renders (ephemeral, as every
//! reply); no rules live here. The `/apikey` checks apply (Manage Server or
//! Administrator, in a server); the log's Previous/Next buttons answer only
//! the admin who ran the command, as the confirm prompts do.

use std::time::Duration;

use poise::serenity_prelude as serenity;
use poise::CreateReply;

use super::deadline::{answer_press, PressAnswer};
use super::error::discord_err;
use super::{render, Context};
use crate::service::usage_report::{Period, UsageReport};
use crate::service::Error;

type Result<T = ()> = std::result::Result<T, Error>;

/// Log entries per page of `/apikey requests`.
pub const PAGE: u32 = 10;

/// The usage chart's file name, as the embed refers to it.
const CHART_FILE: &str = "usage.png";

/// How long the Previous/Next buttons wait for a press.
const PAGING_TIMEOUT: Duration = Duration::from_secs(300);

/// How long `/apikey requests` pages at most, from the command. Discord's
/// interaction token lives 15 minutes, and ending the pager (the buttons
/// taken off) edits the reply with it: past the token's life that edit and
/// any error reply fail and the buttons stay, dead. 13 minutes leaves room.
pub const PAGER_LIFETIME: Duration = Duration::from_secs(13 * 60);

/// What the reply says once paging has ended.
pub const PAGER_CLOSED: &str =
    "⏱️ Paging has ended: Discord lets a reply change for 15 minutes. Run `/apikey requests` again to page on.";

/// When Discord made an interaction, from its id (a snowflake), in
/// milliseconds since the Unix epoch: Discord's clock, not this host's.
fn made_at_ms(id: u64) -> u64 {
    (id >> 22) + 1_420_070_400_000
}

/// 24h: hour buckets; 7d: 6-hour buckets; 30d: day buckets.
#[derive(Debug, Clone, Copy, poise::ChoiceParameter)]
pub enum PeriodChoice {
    #[name = "24h"]
    Day,
    #[name = "7d"]
    Week,
    #[name = "30d"]
    Month,
}

impl From<PeriodChoice> for Period {
    fn from(p: PeriodChoice) -> Self {
        match p {
            PeriodChoice::Day => Period::Day,
            PeriodChoice::Week => Period::Week,
            PeriodChoice::Month => Period::Month,
        }
    }
}

fn guild(ctx: Context<'_>) -> Result<u64> {
    ctx.guild_id().map(|g| g.get()).ok_or_else(|| Error::Missing("use this command in a server".to_owned()))
}

/// Show an API key's usage: requests by outcome, top routes and IPs
#[poise::command(slash_command, rename = "usage")]
pub async fn apikey_usage(
    ctx: Context<'_>,
    #[description = "The key's name, prefix or id"]
    #[autocomplete = "super::apikey::complete_keys"]
    key: String,
    #[description = "24h (default), 7d or 30d"] period: Option<PeriodChoice>,
) -> Result {
    super::deadline::bounded(ctx, ctx.defer_ephemeral()).await?;
    let guild_id = guild(ctx)?;
    let record = ctx.data().keys.find(Some(guild_id), &key).await?;
    let period = period.map_or(Period::Day, Period::from);
    let report = ctx.data().keys.usage(&record.id, period, ctx.data().keys.now()).await?;
    let embed = render::usage_embed(&record, &report);
    // The chart: an 800×400 PNG, shown in the embed. Drawing is CPU work,
    // kept off the runtime's threads.
    let name = record.name.clone();
    let png = tokio::task::spawn_blocking(move || chart_png(&name, &report))
        .await
        .map_err(|e| Error::Internal(anyhow::anyhow!("the chart could not be drawn: {e}")))?
        .map_err(Error::Internal)?;
    let embed = embed.image(format!("attachment://{CHART_FILE}"));
    let reply = CreateReply::default().embed(embed).attachment(serenity::CreateAttachment::bytes(png, CHART_FILE));
    super::deadline::bounded(ctx, ctx.send(reply.ephemeral(true))).await?;
    Ok(())
}

/// The chart `/apikey usage` attaches for the key named `key_name`: its
/// title names the key and the period, its axis the bucket ("per hour").
/// The README's picture is drawn by this function too (`gkbench
/// docs-chart`).
pub fn chart_png(key_name: &str, report: &UsageReport) -> anyhow::Result<Vec<u8>> {
    let (outcomes, buckets) = report.chart_series();
    let title = format!("{key_name} · last {}", report.period);
    let per_bucket = format!("per {}", report.period.bucket_label());
    crate::chart::render_png(&crate::chart::UsageChart {
        title: &title,
        bucket_label: &per_bucket,
        outcomes: &outcomes,
        buckets: &buckets,
    })
}

/// Page through an API key's latest requests (not successful verifications)
#[poise::command(slash_command, rename = "requests")]
pub async fn apikey_requests(
    ctx: Context<'_>,
    #[description = "The key's name, prefix or id"]
    #[autocomplete = "super::apikey::complete_keys"]
    key: String,
) -> Result {
    super::deadline::bounded(ctx, ctx.defer_ephemeral()).await?;
    let guild_id = guild(ctx)?;
    let keys = &ctx.data().keys;
    let record = keys.find(Some(guild_id), &key).await?;
    // The `before` of every page shown so far: the last is the current one.
    let mut pages: Vec<Option<i64>> = vec![None];
    let mut page = keys.requests(&record.id, None, PAGE).await?;
    let prev_id = format!("gk:{}:prev", ctx.id());
    let next_id = format!("gk:{}:next", ctx.id());
    let buttons = |first: bool, last: bool| {
        vec![serenity::CreateActionRow::Buttons(vec![
            serenity::CreateButton::new(&prev_id)
                .label("Previous")
                .style(serenity::ButtonStyle::Secondary)
                .disabled(first),
            serenity::CreateButton::new(&next_id).label("Next").style(serenity::ButtonStyle::Secondary).disabled(last),
        ])]
    };
    let embed = render::requests_embed(&record, &page, 1);
    let single = page.next_before.is_none();
    let mut reply = CreateReply::default().embed(embed).ephemeral(true);
    if !single {
        reply = reply.components(buttons(true, false));
    }
    let handle = super::deadline::bounded(ctx, ctx.send(reply)).await?;
    if single {
        return Ok(());
    }
    let message_id = handle.message().await.map_err(discord_err)?.id;
    let author = ctx.author().id;
    let prefix = format!("gk:{}:", ctx.id());
    // The pager's life is counted twice: on this host's clock, and on
    // Discord's (each press's id says when Discord made it); whichever says
    // PAGER_LIFETIME has passed first ends it.
    let started = tokio::time::Instant::now();
    let asked_at = made_at_ms(ctx.id());
    loop {
        let left = PAGER_LIFETIME.saturating_sub(started.elapsed());
        let filter_prefix = prefix.clone();
        let press = if left.is_zero() {
            None
        } else {
            serenity::ComponentInteractionCollector::new(ctx.serenity_context())
                .message_id(message_id)
                .timeout(PAGING_TIMEOUT.min(left))
                .filter(move |i| i.data.custom_id.starts_with(&filter_prefix))
                .await
        };
        let Some(press) = press else {
            // Quiet for a while, or the pager's life is over: the page
            // stays, the buttons go, while the reply can still be edited.
            let done = CreateReply::default()
                .content(PAGER_CLOSED)
                .embed(render::requests_embed(&record, &page, pages.len()))
                .components(vec![]);
            handle.edit(ctx, done).await.map_err(discord_err)?;
            return Ok(());
        };
        if made_at_ms(press.id.get()).saturating_sub(asked_at) >= PAGER_LIFETIME.as_millis() as u64 {
            // Discord's clock says the pager's life is over: this press ends
            // it, answered with its own (fresh) token.
            let done = PressAnswer::Update {
                content: Some(PAGER_CLOSED.to_owned()),
                embeds: Some(vec![render::requests_embed(&record, &page, pages.len())]),
                components: vec![],
            };
            answer_press(ctx.serenity_context(), &press, async { done }).await?;
            return Ok(());
        }
        if press.user.id != author {
            let refusal =
                PressAnswer::Ephemeral("🔒 Only the admin who ran this command can page through it.".to_owned());
            answer_press(ctx.serenity_context(), &press, async { refusal }).await?;
            continue;
        }
        if press.data.custom_id == next_id {
            if let Some(before) = page.next_before {
                pages.push(Some(before));
            }
        } else if pages.len() > 1 {
            pages.pop();
        }
        let before = pages.last().copied().flatten();
        // Reading the page may outlast Discord's 3 s (a slow database):
        // `answer_press` defers first then.
        let (page_now, shown) = (&mut page, pages.len());
        let work = async {
            match keys.requests(&record.id, before, PAGE).await {
                Ok(next) => {
                    *page_now = next;
                    PressAnswer::Update {
                        content: None,
                        embeds: Some(vec![render::requests_embed(&record, page_now, shown)]),
                        components: buttons(shown == 1, page_now.next_before.is_none()),
                    }
                }
                Err(e) => PressAnswer::Update {
                    content: Some(super::error::user_message(&e)),
                    embeds: None,
                    components: buttons(shown == 1, page_now.next_before.is_none()),
                },
            }
        };
        answer_press(ctx.serenity_context(), &press, work).await?;
    }
}
