//! A bare TCP forwarder on tokio, for `bench/run`'s `tokio-forward` target: each client
//! connection gets its own upstream connection and bytes are copied both ways, nothing
//! else (no protocol, no pooling, no balancing). One thread, one event loop: the least
//! CPU per transaction a tokio proxy can spend on this machine's kernel.
//!
//! `forward LISTEN_ADDR UPSTREAM_ADDR`, e.g. `forward 127.0.0.1:6432 127.0.0.1:5432`.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Copies from `from` to `to` until either side ends.
async fn copy(mut from: tokio::net::tcp::ReadHalf<'_>, mut to: tokio::net::tcp::WriteHalf<'_>) {
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn serve(mut client: TcpStream, upstream: SocketAddr) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.split();
    let (sr, sw) = server.split();
    // One task per client, both directions in it, as pgfleet's pump.
    tokio::select! {
        _ = copy(cr, sw) => {}
        _ = copy(sr, cw) => {}
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream] = args.as_slice() else {
        return Err("usage: forward LISTEN_ADDR UPSTREAM_ADDR".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let upstream: SocketAddr = upstream.parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (client, _) = listener.accept().await?;
            tokio::spawn(serve(client, upstream));
        }
    })
}
