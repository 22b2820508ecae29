//! Thin wrapper around the `iptables` crate (which execs `iptables`/`ip6tables` in the calling
//! thread's network namespace): idempotent chain and jump helpers, and deletion of rules by
//! their comment. Errors are flattened to strings right away (the crate's are not `Send`).
//!
//! The only module that runs iptables (a shape test holds it to that); the order of `FORWARD`
//! is decided by [`super::forward`].

use std::process::Command;

/// One of `iptables` / `ip6tables`.
pub struct Ipt {
    inner: iptables::IPTables,
    /// True for ip6tables.
    pub v6: bool,
    /// True for the nf_tables variant (`iptables -V` says `nf_tables`), false for legacy.
    pub nft_variant: bool,
}

fn err(e: Box<dyn std::error::Error>) -> String {
    e.to_string().trim().to_string()
}

impl Ipt {
    /// Finds the binary; `Err` when it is missing or does not run.
    pub fn new(v6: bool) -> Result<Self, String> {
        let inner = iptables::new(v6).map_err(err)?;
        let nft_variant = Command::new(inner.cmd)
            .arg("-V")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("nf_tables"))
            .unwrap_or(false);
        Ok(Self {
            inner,
            v6,
            nft_variant,
        })
    }

    /// Binary name.
    pub fn cmd(&self) -> &'static str {
        self.inner.cmd
    }

    /// Creates `chain` in `table` unless it exists.
    pub fn ensure_chain(&self, table: &str, chain: &str) -> Result<(), String> {
        if !self.chain_exists(table, chain)? {
            self.inner.new_chain(table, chain).map_err(err)?;
        }
        Ok(())
    }

    /// `iptables-restore --noflush` (or `ip6tables-restore`) fed `input`: see
    /// [`restore_noflush`].
    pub fn restore_noflush(&self, input: &str) -> Result<(), String> {
        restore_with(&format!("{}-restore", self.cmd()), input)
    }

    /// Whether an identical rule exists in `chain` (`-C`).
    pub fn exists(&self, table: &str, chain: &str, rule: &str) -> Result<bool, String> {
        self.inner.exists(table, chain, rule).map_err(err)
    }

    /// Inserts `rule` at position 1 of `chain` unless an identical rule is already there.
    pub fn ensure_first(&self, table: &str, chain: &str, rule: &str) -> Result<(), String> {
        if !self.inner.exists(table, chain, rule).map_err(err)? {
            self.inner.insert(table, chain, rule, 1).map_err(err)?;
        }
        Ok(())
    }

    /// Appends `rule` to `chain` unless an identical rule exists.
    pub fn ensure_appended(&self, table: &str, chain: &str, rule: &str) -> Result<(), String> {
        if !self.inner.exists(table, chain, rule).map_err(err)? {
            self.inner.append(table, chain, rule).map_err(err)?;
        }
        Ok(())
    }

    /// Deletes `rule` if present.
    pub fn delete_if_present(&self, table: &str, chain: &str, rule: &str) -> Result<(), String> {
        if self.inner.exists(table, chain, rule).map_err(err)? {
            self.inner.delete(table, chain, rule).map_err(err)?;
        }
        Ok(())
    }

    /// Whether `chain` exists in `table`.
    pub fn chain_exists(&self, table: &str, chain: &str) -> Result<bool, String> {
        Ok(self.list_s(table, chain)?.is_some())
    }

    /// `-S chain` output lines, `None` when the chain does not exist. (`-S` never resolves
    /// names, unlike `-L`, and the crate's numeric mode adds a `-n` that `-S` refuses.)
    fn list_s(&self, table: &str, chain: &str) -> Result<Option<Vec<String>>, String> {
        let out = self
            .inner
            .execute(table, &format!("-S {chain}"))
            .map_err(err)?;
        if !out.status.success() {
            return Ok(None);
        }
        Ok(Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(String::from)
                .collect(),
        ))
    }

    /// Rule specs of `chain` (the text after `-A <chain> `); empty when the chain is absent.
    pub fn rules(&self, table: &str, chain: &str) -> Result<Vec<String>, String> {
        let Some(lines) = self.list_s(table, chain)? else {
            return Ok(Vec::new());
        };
        let prefix = format!("-A {chain} ");
        Ok(lines
            .into_iter()
            .filter_map(|l| l.strip_prefix(&prefix).map(String::from))
            .collect())
    }

    /// Deletes every rule of `chain` whose comment satisfies `owned`; returns how many.
    pub fn delete_commented(
        &self,
        table: &str,
        chain: &str,
        owned: impl Fn(&str) -> bool,
    ) -> Result<usize, String> {
        let mut n = 0;
        for spec in self.rules(table, chain)? {
            if comment_of(&spec).is_some_and(&owned) {
                self.inner.delete(table, chain, &spec).map_err(err)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Removes the jumps `(from, rule)` (all copies) and then flushes and deletes `chain`.
    pub fn remove_chain(
        &self,
        table: &str,
        chain: &str,
        jumps: &[(&str, &str)],
    ) -> Result<(), String> {
        for (from, rule) in jumps {
            self.inner.delete_all(table, from, rule).map_err(err)?;
        }
        if self.chain_exists(table, chain)? {
            self.inner.flush_chain(table, chain).map_err(err)?;
            self.inner.delete_chain(table, chain).map_err(err)?;
        }
        Ok(())
    }
}

/// `iptables-save -c -t TABLE` (IPv4, with counters) in the calling thread's namespace.
pub fn save_with_counters(table: &str) -> Result<String, String> {
    let out = Command::new("iptables-save")
        .args(["-c", "-t", table])
        .output()
        .map_err(|e| format!("iptables-save: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "iptables-save: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `iptables-restore -w 5 --noflush` (IPv4) fed `input`: one atomic commit of the tables it
/// names, leaving every chain it does not mention alone.
pub fn restore_noflush(input: &str) -> Result<(), String> {
    restore_with("iptables-restore", input)
}

fn restore_with(bin: &str, input: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = Command::new(bin)
        .args(["-w", "5", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{bin}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("{bin}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{bin}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{bin}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// The `--comment` value of a rule spec as printed by `iptables -S` (quotes removed).
pub fn comment_of(spec: &str) -> Option<&str> {
    let mut it = spec.split_whitespace();
    while let Some(tok) = it.next() {
        if tok == "--comment" {
            return it.next().map(|c| c.trim_matches('"'));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_parsing() {
        assert_eq!(
            comment_of("-o br0 -m comment --comment shimnet:n1 -j ACCEPT"),
            Some("shimnet:n1")
        );
        assert_eq!(
            comment_of("-m comment --comment \"shimnet:n1\" -j DROP"),
            Some("shimnet:n1")
        );
        assert_eq!(comment_of("-o br0 -j ACCEPT"), None);
    }
}
