use std::{
    io::{Read, Write as _},
    time::Duration,
};

use bytes::Bytes;
use switchboard::{Conn, Listener, SessionHandler};
use switchboard_codec::Raw;

struct Echo;
impl SessionHandler<Raw> for Echo {
    fn ready_read(&mut self, data: Bytes, conn: &mut Conn<'_, Raw, Self>) {
        conn.write(data).unwrap();
    }
}

#[actix_rt::test]
async fn echo_smoke() {
    let server = Listener::bind("127.0.0.1:0")
        .workers(2)
        .serve(Raw, || Echo)
        .unwrap();
    let addr = server.local_addr();
    let registry = server.registry().clone();
    let got = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let payload = vec![7u8; 200_000];
        s.write_all(&payload).unwrap();
        let mut back = vec![0u8; payload.len()];
        s.read_exact(&mut back).unwrap();
        back == payload
    })
    .await
    .unwrap();
    assert!(got);
    tokio::time::timeout(Duration::from_secs(5), registry.wait_for_count(0))
        .await
        .unwrap();
}
