//! A throwaway PostgreSQL cluster for the fleet tests: Debian's `postgresql` server
//! binaries, `initdb` into a temporary folder, started on a free loopback port with
//! password (SCRAM) logins over TCP, and stopped (its folder removed) when dropped, even
//! when the test fails. PostgreSQL refuses to run as root, so as root the cluster runs as
//! the `postgres` user. Nothing is started by hand: `.ci/run` installs the package.
#![allow(dead_code)] // each test binary uses a different part

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The role and database Warden uses, and the role's password.
pub const ROLE: &str = "warden";
pub const DATABASE: &str = "warden";
pub const PASSWORD: &str = "fleet test password";

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// Running as root: every command runs as `postgres`.
    as_postgres: bool,
    /// TLS on (a server certificate for 127.0.0.1 from a test CA: [`Postgres::ca_file`]).
    tls: bool,
}

impl Postgres {
    /// A new cluster, running, with the `warden` role owning the `warden` database.
    pub fn start() -> Postgres {
        Postgres::start_with(false)
    }

    /// The same, also accepting TLS with a certificate for 127.0.0.1 signed by a CA made
    /// for the test (see [`Postgres::ca_file`]).
    pub fn start_with_tls() -> Postgres {
        Postgres::start_with(true)
    }

    fn start_with(tls: bool) -> Postgres {
        let bin = server_bin();
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::Builder::new()
            .prefix("warden-pg-")
            .tempdir()
            .expect("a folder for the cluster");
        if as_postgres {
            chown_to_postgres(dir.path());
        }
        let mut pg = Postgres {
            dir,
            bin,
            port: 0,
            as_postgres,
            tls,
        };
        if tls {
            pg.make_certificates();
        }
        std::fs::write(pg.path("superuser.pw"), "superuser test password\n").expect("pwfile");
        if as_postgres {
            chown_to_postgres(&pg.path("superuser.pw"));
        }
        let data = pg.path("data");
        let pwfile = pg.path("superuser.pw");
        let out = pg.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth-local=trust".as_ref(),
                "--auth-host=scram-sha-256".as_ref(),
                "--pwfile".as_ref(),
                pwfile.as_os_str(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        assert!(out.status.success(), "initdb: {}", text(&out));
        // A port is free when bound and released; another process may take it before
        // PostgreSQL does, so a failed start tries another.
        for attempt in 0..5 {
            pg.port = free_port();
            if pg.try_start() {
                break;
            }
            assert!(attempt < 4, "PostgreSQL did not start: {}", pg.log());
        }
        pg.superuser_sql(&format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'"));
        pg.superuser_sql(&format!("CREATE DATABASE {DATABASE} OWNER {ROLE}"));
        pg
    }

    /// `postgres://warden@127.0.0.1:port/warden`: the password is given apart.
    pub fn url(&self) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The test CA's certificate (PEM), which signed the server's.
    pub fn ca_file(&self) -> PathBuf {
        self.path("ca.crt")
    }

    /// Another CA's certificate, which signed nothing this server shows.
    pub fn other_ca_file(&self) -> PathBuf {
        self.path("other-ca.crt")
    }

    /// A CA, a server key and certificate for 127.0.0.1 signed by it (openssl), and a
    /// second, unrelated CA.
    fn make_certificates(&self) {
        let dir = self.dir.path();
        // `openssl req` with a new P-256 key and no passphrase, then `rest`.
        let request = |rest: &[&str]| {
            let mut args = vec![
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ];
            args.extend_from_slice(rest);
            openssl(dir, &args);
        };
        for ca in ["ca", "other-ca"] {
            let (key, crt) = (format!("{ca}.key"), format!("{ca}.crt"));
            request(&[
                "-x509",
                "-keyout",
                &key,
                "-out",
                &crt,
                "-days",
                "2",
                "-subj",
                "/CN=Warden test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        }
        request(&[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("extensions");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        if self.as_postgres {
            for file in ["server.key", "server.crt"] {
                chown_to_postgres(&dir.join(file));
            }
        }
    }

    /// Stop the server (fast shutdown: connections are cut, as in an outage).
    pub fn stop(&self) {
        let out = self.stop_with("fast");
        assert!(out.status.success(), "pg_ctl stop: {}", text(&out));
    }

    /// `pg_ctl stop` in shutdown `mode`, waiting for it.
    fn stop_with(&self, mode: &str) -> Output {
        let data = self.path("data");
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                mode.as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        )
    }

    /// Start it again on the same port after [`Postgres::stop`].
    pub fn restart(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        // The port may linger for a moment after the stop.
        while !self.try_start() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not restart: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The folder of the server's Unix socket (the superuser signs in there without a
    /// password).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Run SQL in the `warden` database as the superuser (over the local socket);
    /// `psql -At` output.
    pub fn sql(&self, sql: &str) -> String {
        self.psql(DATABASE, sql)
    }

    /// Run `sql` as the superuser in the `postgres` database (server settings).
    pub fn superuser(&self, sql: &str) -> String {
        self.superuser_sql(sql)
    }

    /// The server's log so far.
    pub fn server_log(&self) -> String {
        self.log()
    }

    fn superuser_sql(&self, sql: &str) -> String {
        self.psql("postgres", sql)
    }

    fn psql(&self, database: &str, sql: &str) -> String {
        let socket = self.dir.path();
        let port = self.port.to_string();
        let out = self.run(
            "psql",
            &[
                "-h".as_ref(),
                socket.as_os_str(),
                "-p".as_ref(),
                port.as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-d".as_ref(),
                database.as_ref(),
                "-v".as_ref(),
                "ON_ERROR_STOP=1".as_ref(),
                "-At".as_ref(),
                "-c".as_ref(),
                sql.as_ref(),
            ],
        );
        assert!(out.status.success(), "psql {sql}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn try_start(&self) -> bool {
        let data = self.path("data");
        let log = self.path("server.log");
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=60",
            self.port,
            self.dir.path().display()
        );
        if self.tls {
            let dir = self.dir.path().display();
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key"
            ));
        }
        let out = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "start".as_ref(),
            ],
        );
        out.status.success()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("server.log")).unwrap_or_default()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Output {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        command
            .args(args)
            // pg_ctl's server inherits the working folder: one postgres can read.
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", program.display()))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate: the cluster is thrown away, so nothing needs writing out.
        let _ = self.stop_with("immediate");
    }
}

/// The newest installed server's `bin` folder (`/usr/lib/postgresql/<version>/bin`).
fn server_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL's server is not installed: apt-get install postgresql")
}

/// Run `openssl` in `dir`; fail the test with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn chown_to_postgres(path: &Path) {
    let status = Command::new("chown")
        .args(["postgres:postgres"])
        .arg(path)
        .status()
        .expect("chown");
    assert!(status.success(), "chown {}", path.display());
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
