//! The `shimnet` CNI plugin: reads `CNI_*` and the network configuration on stdin, asks shimnetd
//! over its API socket, prints the result (or the spec's error object) and exits. Holds no state.

#![forbid(unsafe_code)]

mod commands;
mod daemon;
mod delegate;
use shimnet_cni::env;

use std::io::{Read, Write};
use std::process::ExitCode;

use shimnet_compat::cni::error::code;
use shimnet_compat::cni::CniError;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let env = env::Env::read(|k| std::env::var(k).ok());
    // VERSION and STATUS may come with an empty stdin; reading never blocks past EOF.
    let read = std::io::stdin().read_to_end(&mut stdin);
    let out = match read {
        Ok(_) => commands::dispatch(env, &stdin),
        Err(e) => Err((
            CniError::new(code::IO, "cannot read the network configuration from stdin")
                .with_details(e.to_string()),
            "1.1.0".to_string(),
        )),
    };
    // One write of the whole reply (stdout is line-buffered in pieces of 1 KiB otherwise).
    let print = |v: &serde_json::Value| {
        let mut text = serde_json::to_vec(v).unwrap_or_default();
        text.push(b'\n');
        let _ = std::io::stdout().lock().write_all(&text);
    };
    match out {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(v)) => {
            print(&v);
            ExitCode::SUCCESS
        }
        Err((e, version)) => {
            print(&e.to_json(&version));
            eprintln!("shimnet: {e}");
            ExitCode::FAILURE
        }
    }
}
