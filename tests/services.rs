//! The external services the test suite relies on are really there and speak their protocols:
//! etcd answers its HTTP health check and MariaDB sends a MySQL protocol-10 greeting.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

#[test]
fn etcd_answers_health_check() {
    let Some(endpoint) = support::external_service("TIDAL_TEST_ETCD") else {
        return;
    };
    let mut stream = connect(&endpoint);
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "etcd said: {response}"
    );
    assert!(
        response.contains("\"health\":\"true\""),
        "etcd said: {response}"
    );
}

#[test]
fn mariadb_sends_protocol_10_greeting() {
    let Some(url) = support::external_service("TIDAL_TEST_MYSQL") else {
        return;
    };
    // mysql://user:password@host:port/db
    let host_port = url
        .rsplit_once('@')
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or_else(|| panic!("malformed TIDAL_TEST_MYSQL: {url}"));
    let mut stream = connect(host_port);
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).unwrap();
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).unwrap();
    assert_eq!(
        payload[0], 10,
        "protocol version byte of the server greeting"
    );
    let version_end = payload[1..].iter().position(|&b| b == 0).unwrap() + 1;
    let version = std::str::from_utf8(&payload[1..version_end]).unwrap();
    assert!(version.contains("MariaDB"), "server version {version}");
}
