//! The `tidal` binary's command-line surface.

use std::process::Command;

fn tidal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tidal"))
}

#[test]
fn help_lists_every_subcommand() {
    let out = tidal().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for sub in ["demo", "server", "sim", "cli", "bench", "verify"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "`{sub}` missing from:\n{help}"
        );
    }
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = tidal().arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no-such-command"), "{err}");
}

/// Subcommands whose issues have not landed yet must say so plainly and fail, so that no script
/// mistakes them for success. Remove a name from this list when its subcommand is built.
#[test]
fn unbuilt_subcommands_say_so_and_fail() {
    for sub in ["demo", "server", "sim", "cli", "bench", "verify"] {
        let out = tidal().arg(sub).output().unwrap();
        assert!(!out.status.success(), "`tidal {sub}` exited 0");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains("not implemented yet"),
            "`tidal {sub}` said: {err}"
        );
    }
}
