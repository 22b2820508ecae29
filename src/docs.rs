//! Man pages (section 8, one per command and subcommand) and shell completions generated from a
//! binary's clap definition, for the Debian package (`shimnetd --generate-docs DIR`,
//! `shimnetctl generate-docs DIR`, both hidden).
//!
//! Layout under `DIR`: `man8/*.8`, `bash/<name>`, `zsh/_<name>`, `fish/<name>.fish` — the file
//! names the shells look for in their vendor completion directories.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap_complete::Shell;

/// Writes every man page and completion file of `cmd` under `dir`; returns the files written.
pub fn generate(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let name = cmd.get_name().to_string();
    let mut written = Vec::new();
    let man = dir.join("man8");
    std::fs::create_dir_all(&man)?;
    man_pages(&cmd, &man, &mut written)?;
    for (shell, sub, file) in [
        (Shell::Bash, "bash", name.clone()),
        (Shell::Zsh, "zsh", format!("_{name}")),
        (Shell::Fish, "fish", format!("{name}.fish")),
    ] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d)?;
        let path = d.join(file);
        let mut f = std::fs::File::create(&path)?;
        clap_complete::generate(shell, &mut cmd.clone(), &name, &mut f);
        f.flush()?;
        written.push(path);
    }
    Ok(written)
}

fn man_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, dir, written)?;
    }
    let page = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("shimnet")
        .source(format!("shimnet {}", env!("CARGO_PKG_VERSION")));
    written.push(page.generate_to(dir)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser, Subcommand};

    /// Demo CLI.
    #[derive(Parser)]
    #[command(name = "demo")]
    struct Demo {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Subcommand)]
    enum Cmd {
        /// Visible.
        Shown {
            /// An option.
            #[arg(long)]
            flag: bool,
        },
        #[command(hide = true)]
        Hidden,
    }

    #[test]
    fn pages_and_completions_for_visible_commands() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(Demo::command(), dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "man8/demo-shown.8",
                "man8/demo.8",
                "bash/demo",
                "zsh/_demo",
                "fish/demo.fish"
            ]
        );
        let page = std::fs::read_to_string(dir.path().join("man8/demo-shown.8")).unwrap();
        assert!(page.contains(".TH demo-shown 8"), "{page}");
        assert!(page.contains("\\-\\-flag"), "{page}");
        let bash = std::fs::read_to_string(dir.path().join("bash/demo")).unwrap();
        assert!(
            bash.contains("complete -F") && bash.contains("shown"),
            "{bash}"
        );
    }
}
