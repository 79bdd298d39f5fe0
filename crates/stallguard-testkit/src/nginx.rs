//! A private nginx configuration for the tests that put nginx under the guard: one worker,
//! proxying everything to a backend, its own timers far above the guard's so every cut is the
//! guard's. Logs, pid and temp files live in a scratch directory.

use crate::paths::scratch;
use std::path::{Path, PathBuf};

/// What differs between the tests' nginx configurations.
pub struct NginxProxy<'a> {
    /// The scratch directory's name (one per test file).
    pub dir: &'a str,
    pub port: u16,
    pub backend: u16,
    /// Certificate and key: listen with TLS.
    pub tls: Option<(&'a Path, &'a Path)>,
    /// `proxy_request_buffering off`: request bodies stream to the backend as they come.
    pub stream_bodies: bool,
}

/// Writes the configuration; its path (run `nginx -c PATH`).
pub fn nginx_proxy_conf(p: &NginxProxy) -> PathBuf {
    let dir = scratch(p.dir);
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let d = dir.display();
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root root;"
    } else {
        ""
    };
    let (port, backend) = (p.port, p.backend);
    let listen = match p.tls {
        Some((cert, key)) => format!(
            "listen 127.0.0.1:{port} ssl;
        ssl_certificate {};
        ssl_certificate_key {};",
            cert.display(),
            key.display()
        ),
        None => format!("listen 127.0.0.1:{port};"),
    };
    let streaming = if p.stream_bodies {
        "\n            proxy_request_buffering off;"
    } else {
        ""
    };
    let conf = format!(
        "{user}
worker_processes 1;
error_log {d}/logs/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_header_timeout 600s;
    client_body_timeout 600s;
    keepalive_timeout 600s;
    send_timeout 600s;
    server {{
        {listen}
        location / {{
            proxy_pass http://127.0.0.1:{backend};
            proxy_http_version 1.1;
            proxy_read_timeout 600s;{streaming}
        }}
    }}
}}
"
    );
    let file = dir.join("nginx.conf");
    std::fs::write(&file, conf).unwrap();
    file
}
