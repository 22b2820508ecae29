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
    let mut stdout = std::io::stdout().lock();
    match out {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(v)) => {
            let _ = writeln!(stdout, "{v}");
            ExitCode::SUCCESS
        }
        Err((e, version)) => {
            let _ = writeln!(stdout, "{}", e.to_json(&version));
            eprintln!("shimnet: {e}");
            ExitCode::FAILURE
        }
    }
}
