//! PostgreSQL over TLS, black-box: a PostgreSQL server of the test's own
//! (the machine's binaries, `initdb` into a temporary directory, `ssl = on`
//! with a server certificate from a CA the test makes with `openssl`), and
//! the real binary connecting to it with `sslmode=verify-full`, seen
//! encrypted in `pg_stat_ssl`; a server whose certificate that CA did not
//! sign refused; the password never shown, whatever the URL's form.
//!
//! Skipped (with a note) where PostgreSQL's server binaries or `openssl`
//! are missing.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sqlx::{Connection, Row};
use support::{spawn_app_with, Options};

const PASSWORD: &str = "tls-p@ss?word";

/// PostgreSQL's server binaries (Debian keeps them off the PATH).
fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql").ok()?.flatten().map(|e| e.path()).collect();
    dirs.sort();
    dirs.into_iter().rev().map(|d| d.join("bin")).find(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().expect("run a command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A command run as the `postgres` user when this is root (PostgreSQL
/// refuses to run as root), as this user otherwise.
fn as_server_user(program: &Path, args: &[&str]) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let line = std::iter::once(program.to_string_lossy().into_owned())
            .chain(args.iter().map(|a| (*a).to_owned()))
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new("su");
        cmd.args(["postgres", "-s", "/bin/sh", "-c", &line]);
        cmd
    } else {
        let mut cmd = Command::new(program);
        cmd.args(args);
        cmd
    }
}

/// Makes a CA (`<name>.crt`) in `dir`, and with `server`, a key and a
/// certificate it signs for localhost and 127.0.0.1.
fn make_ca(dir: &Path, name: &str, server: bool) {
    let at = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let subject = format!("/CN=guildkey test {name}");
    run(Command::new("openssl").args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj"]).args([
        &subject,
        "-keyout",
        &at(&format!("{name}.key")),
        "-out",
        &at(&format!("{name}.crt")),
    ]));
    if !server {
        return;
    }
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    run(Command::new("openssl").args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost"]).args([
        "-keyout",
        &at("server.key"),
        "-out",
        &at("server.csr"),
    ]));
    run(Command::new("openssl").args(["x509", "-req", "-days", "2", "-in", &at("server.csr")]).args([
        "-CA",
        &at(&format!("{name}.crt")),
        "-CAkey",
        &at(&format!("{name}.key")),
        "-CAcreateserial",
        "-extfile",
        &at("san.ext"),
        "-out",
        &at("server.crt"),
    ]));
}

/// A PostgreSQL server with TLS on, stopped when dropped.
struct TlsServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
    /// The CA that signed the server's certificate, and one that did not.
    ca: PathBuf,
    other_ca: PathBuf,
}

impl TlsServer {
    fn start() -> Option<Self> {
        let Some(bin) = pg_bin() else {
            eprintln!("SKIPPED: PostgreSQL's server binaries (initdb, pg_ctl) are not installed");
            return None;
        };
        if Command::new("openssl").arg("version").output().is_err() {
            eprintln!("SKIPPED: openssl is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        make_ca(&root, "ca", true);
        make_ca(&root, "other-ca", false);
        let data = root.join("data");
        std::fs::write(root.join("pw"), PASSWORD).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::set_permissions(root.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
            std::fs::set_permissions(root.join("pw"), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            run(Command::new("chown").args(["postgres", &root.join("server.key").to_string_lossy()]));
            std::fs::create_dir(&data).unwrap();
            run(Command::new("chown").args(["postgres", &data.to_string_lossy()]));
        }
        let (data_s, root_s) = (data.to_string_lossy().into_owned(), root.to_string_lossy().into_owned());
        run(&mut as_server_user(
            &bin.join("initdb"),
            &[
                "-D",
                &data_s,
                "-U",
                "guildkey",
                "--pwfile",
                &format!("{root_s}/pw"),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
            ],
        ));
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{data_s}'\nssl = on\n\
             ssl_cert_file = '{root_s}/server.crt'\nssl_key_file = '{root_s}/server.key'\nfsync = off\n"
        );
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).unwrap();
        text.push_str(&conf);
        std::fs::write(&conf_path, text).unwrap();
        run(&mut as_server_user(
            &bin.join("pg_ctl"),
            &["-D", &data_s, "-l", &format!("{data_s}/log"), "-w", "-t", "30", "start"],
        ));
        Some(Self { bin, data, port, ca: root.join("ca.crt"), other_ca: root.join("other-ca.crt"), _dir: dir })
    }

    fn url(&self, query: &str) -> String {
        let password = PASSWORD.replace('@', "%40").replace('?', "%3F");
        format!("postgres://guildkey:{password}@localhost:{}/postgres{query}", self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let data = self.data.to_string_lossy().into_owned();
        let _ = as_server_user(&self.bin.join("pg_ctl"), &["-D", &data, "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `guildkey migrate` against `url`, with extra environment; its output.
fn migrate(url: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_guildkey"));
    cmd.arg("migrate")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", url)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cmd.output().expect("run guildkey migrate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_talks_to_postgres_over_verified_tls_seen_encrypted_in_pg_stat_ssl() {
    // Arrange: a PostgreSQL server with TLS on, its CA's certificate.
    let Some(server) = tokio::task::spawn_blocking(TlsServer::start).await.unwrap() else { return };
    let ca = server.ca.to_string_lossy().into_owned();

    // Act: the listener connects with sslmode=verify-full through the config
    // keys (DATABASE_SSLMODE, DATABASE_SSLROOTCERT); the CLI through the
    // URL's own parameters, once with the right CA, once with another.
    let app = spawn_app_with(Options {
        db_url: Some(server.url("")),
        env: vec![("DATABASE_SSLMODE".into(), "verify-full".into()), ("DATABASE_SSLROOTCERT".into(), ca.clone())],
        ..Default::default()
    })
    .await;
    let mut admin =
        sqlx::PgConnection::connect(&server.url(&format!("?sslmode=verify-full&sslrootcert={ca}"))).await.unwrap();
    let seen = sqlx::query(
        "select a.application_name, s.ssl, s.version, s.cipher from pg_stat_ssl s \
         join pg_stat_activity a on a.pid = s.pid where a.application_name = 'guildkey' order by a.pid",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    let rows: Vec<(String, bool, Option<String>, Option<String>)> =
        seen.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    let good = migrate(&server.url(&format!("?sslmode=verify-full&sslrootcert={ca}")), &[]);
    let other_ca = server.other_ca.to_string_lossy().into_owned();
    let wrong_ca = migrate(&server.url(&format!("?sslmode=verify-full&sslrootcert={other_ca}")), &[]);
    let plain = migrate(&server.url("?sslmode=disable"), &[]);

    // Assert: every connection of the listener is encrypted; the CLI gets
    // in with the right CA, is refused with another, and the error names
    // the URL with its password masked.
    assert!(!rows.is_empty(), "the listener's connections are in pg_stat_activity");
    assert!(rows.iter().all(|(_, ssl, version, _)| *ssl && version.is_some()), "{rows:?}");
    eprintln!("pg_stat_ssl for the listener's connections (application_name, ssl, version, cipher): {rows:?}");
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    let refused = String::from_utf8_lossy(&wrong_ca.stderr).into_owned();
    assert!(!wrong_ca.status.success(), "a server the CA did not sign is refused");
    assert!(refused.to_lowercase().contains("certificate") || refused.contains("tls"), "{refused}");
    assert!(refused.contains("postgres://guildkey:********@localhost"), "{refused}");
    eprintln!("verify-full against a certificate from another CA: {}", refused.trim());
    assert!(plain.status.success(), "sslmode=disable still connects: {}", String::from_utf8_lossy(&plain.stderr));
    for text in [refused.clone(), String::from_utf8_lossy(&good.stderr).into_owned(), app.logs().join("\n")] {
        assert!(!text.contains("p@ss") && !text.contains("p%40ss"), "the password leaked: {text}");
    }
    drop(app);
    admin.close().await.unwrap();
    drop(server);
}
