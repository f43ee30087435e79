//! Accept TCP connections on an address and close them at once: a probe target for the
//! network namespace tests. `tcp-listen 10.77.0.3:7000`; runs until killed.

use std::net::TcpListener;

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "0.0.0.0:7000".into());
    let listener = TcpListener::bind(&addr)?;
    println!("listening on {}", listener.local_addr()?);
    for conn in listener.incoming() {
        drop(conn);
    }
    Ok(())
}
