//! A simulated UPS for `sitewatch demo`: a tiny server on loopback that answers the
//! NUT network protocol's `GET VAR` the way upsd does, so the demo's agents read it
//! through the same client and parser they use against a real upsd. Only what the
//! agent asks is answered; anything else gets upsd's `ERR UNKNOWN-COMMAND`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sitewatch_proto::ups::{ErrCode, Reply};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The UPS's state, changed by the demo's script.
#[derive(Debug, Clone)]
struct Readings {
    status: &'static str,
    charge: u32,
    runtime_s: u32,
}

#[derive(Clone)]
pub struct SimulatedUps {
    name: &'static str,
    addr: SocketAddr,
    readings: Arc<Mutex<Readings>>,
}

impl SimulatedUps {
    /// Listen on a free loopback port until `cancel`.
    pub async fn start(name: &'static str, cancel: CancellationToken) -> std::io::Result<SimulatedUps> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let ups = SimulatedUps {
            name,
            addr: listener.local_addr()?,
            readings: Arc::new(Mutex::new(Readings { status: "OL CHRG", charge: 100, runtime_s: 2400 })),
        };
        let server = ups.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            tokio::spawn(server.clone().serve(stream, cancel.clone()));
                        }
                    }
                }
            }
        });
        Ok(ups)
    }

    /// `host:port` for an `[[ups]]` table's `server`.
    pub fn server(&self) -> String {
        self.addr.to_string()
    }

    pub fn on_battery(&self) {
        let mut r = self.readings.lock().expect("readings lock");
        *r = Readings { status: "OB DISCHRG", charge: 96, runtime_s: 2100 };
    }

    pub fn on_line(&self) {
        let mut r = self.readings.lock().expect("readings lock");
        *r = Readings { status: "OL CHRG", charge: 97, runtime_s: 2200 };
    }

    fn answer(&self, line: &str) -> String {
        let err = |code: &str| Reply::Err { code: ErrCode::parse(code), extra: None }.to_line();
        let Some(rest) = line.strip_prefix("GET VAR ") else { return err("UNKNOWN-COMMAND") };
        let Some((ups, var)) = rest.split_once(' ') else { return err("INVALID-ARGUMENT") };
        if ups != self.name {
            return err("UNKNOWN-UPS");
        }
        let r = self.readings.lock().expect("readings lock").clone();
        let value = match var {
            "ups.status" => r.status.to_string(),
            "battery.charge" => r.charge.to_string(),
            "battery.runtime" => r.runtime_s.to_string(),
            "battery.runtime.low" => "300".into(),
            "input.voltage" => if r.status.starts_with("OB") { "0.0" } else { "230.0" }.into(),
            "ups.load" => "35".into(),
            _ => return err("VAR-NOT-SUPPORTED"),
        };
        Reply::Var { ups: ups.into(), var: var.into(), value }.to_line()
    }

    async fn serve(self, stream: TcpStream, cancel: CancellationToken) {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        loop {
            let line = tokio::select! {
                _ = cancel.cancelled() => return,
                line = lines.next_line() => match line {
                    Ok(Some(l)) => l,
                    _ => return,
                },
            };
            if write.write_all(self.answer(line.trim_end()).as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sitewatch_proto::ups::parse_reply;

    #[tokio::test]
    async fn answers_like_upsd() {
        let ups = SimulatedUps::start("demo", CancellationToken::new()).await.unwrap();
        let got = |line: &str| parse_reply(ups.answer(line).as_bytes()).unwrap();
        assert!(matches!(got("GET VAR demo ups.status"), Reply::Var { value, .. } if value == "OL CHRG"));
        ups.on_battery();
        assert!(matches!(got("GET VAR demo ups.status"), Reply::Var { value, .. } if value == "OB DISCHRG"));
        assert!(matches!(got("GET VAR other ups.status"), Reply::Err { .. }));
        assert!(matches!(got("GET VAR demo ups.model"), Reply::Err { .. }));
        assert!(matches!(got("STARTTLS"), Reply::Err { .. }));
    }
}
