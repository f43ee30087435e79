//! Accept TCP connections on an address and close them at once: a probe target for the
//! network namespace tests. `tcp-listen 10.77.0.3:7000 [SECONDS]`: runs until killed, or
//! for SECONDS (a bound for when the test that started it dies before its cleanup).

use std::net::TcpListener;
use std::time::Duration;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "0.0.0.0:7000".into());
    if let Some(secs) = args.next().and_then(|s| s.parse::<u64>().ok()) {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(secs));
            std::process::exit(0);
        });
    }
    let listener = TcpListener::bind(&addr)?;
    println!("listening on {}", listener.local_addr()?);
    for conn in listener.incoming() {
        drop(conn);
    }
    Ok(())
}
