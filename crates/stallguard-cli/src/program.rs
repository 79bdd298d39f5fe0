//! Which file a command runs: a bare name is looked up in `PATH` (as `execvp` does, so `run`
//! and `check` agree), and a script runs its `#!` interpreter (`#!/usr/bin/env python3`: the
//! first `python3` in `PATH`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// `name` as `run` would find it: a path with a `/` as it is, a bare name in `path_var`.
pub fn in_path(name: &Path, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if name.to_string_lossy().contains('/') {
        return Some(name.to_path_buf());
    }
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `name` in the process's own `PATH`.
pub fn which(name: &Path) -> Option<PathBuf> {
    in_path(name, std::env::var_os("PATH").as_deref())
}

/// A script's `#!` line: the interpreter and the rest of the line (one argument, as the
/// kernel passes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shebang {
    pub interpreter: String,
    pub arg: Option<String>,
}

impl Shebang {
    /// The `#!` line of `data`, if it starts with one.
    pub fn parse(data: &[u8]) -> Option<Shebang> {
        let rest = data.strip_prefix(b"#!")?;
        let line = rest.split(|b| *b == b'\n').next()?;
        let line = String::from_utf8_lossy(line);
        let mut words = line.trim().splitn(2, [' ', '\t']);
        let interpreter = words.next().filter(|i| !i.is_empty())?.to_string();
        let arg = words.next().map(str::trim).filter(|a| !a.is_empty());
        Some(Shebang {
            interpreter,
            arg: arg.map(str::to_string),
        })
    }

    /// `#!/usr/bin/env python3` as written.
    pub fn line(&self) -> String {
        match &self.arg {
            Some(a) => format!("#!{} {a}", self.interpreter),
            None => format!("#!{}", self.interpreter),
        }
    }

    /// The program `env` runs: its first argument that is neither an option (`-S`) nor a
    /// `NAME=value` assignment. `None` when the interpreter is not `env`.
    pub fn env_program(&self) -> Option<&str> {
        if Path::new(&self.interpreter).file_name()? != "env" {
            return None;
        }
        self.arg
            .as_deref()?
            .split_whitespace()
            .find(|w| !w.starts_with('-') && !w.contains('='))
    }

    /// The file the script really runs, with `path_var` for `env`'s lookup.
    pub fn program(&self, path_var: Option<&OsStr>) -> Result<PathBuf, String> {
        let Some(name) = self.env_program() else {
            return Ok(PathBuf::from(&self.interpreter));
        };
        in_path(Path::new(name), path_var)
            .ok_or_else(|| format!("{}: {name} is not found in PATH", self.line()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_lines() {
        let sb = Shebang::parse(b"#!/bin/sh\necho hi\n").unwrap();
        assert_eq!((sb.interpreter.as_str(), sb.arg), ("/bin/sh", None));
        let sb = Shebang::parse(b"#! /usr/bin/env  -S python3 -u \n").unwrap();
        assert_eq!(sb.interpreter, "/usr/bin/env");
        assert_eq!(sb.arg.as_deref(), Some("-S python3 -u"));
        assert_eq!(sb.env_program(), Some("python3"));
        assert_eq!(sb.line(), "#!/usr/bin/env -S python3 -u");
        let sb = Shebang::parse(b"#!/usr/bin/env LC_ALL=C perl").unwrap();
        assert_eq!(sb.env_program(), Some("perl"));
        assert_eq!(Shebang::parse(b"\x7fELF"), None);
        assert_eq!(Shebang::parse(b"#!\n"), None);
        let sb = Shebang::parse(b"#!/usr/bin/python3 -u").unwrap();
        assert_eq!(sb.env_program(), None);
        assert_eq!(sb.program(None), Ok(PathBuf::from("/usr/bin/python3")));
    }

    #[test]
    fn names_are_looked_up_in_path_paths_are_not() {
        let dirs = std::env::join_paths(["/nonexistent", "/bin", "/usr/bin"]).unwrap();
        let sh = in_path(Path::new("sh"), Some(&dirs)).unwrap();
        assert!(sh.ends_with("sh") && sh.is_file(), "{sh:?}");
        assert_eq!(in_path(Path::new("no-such-program-x"), Some(&dirs)), None);
        assert_eq!(in_path(Path::new("sh"), None), None);
        assert_eq!(
            in_path(Path::new("./sh"), Some(&dirs)),
            Some(PathBuf::from("./sh"))
        );
        let sb = Shebang::parse(b"#!/usr/bin/env sh").unwrap();
        assert_eq!(sb.program(Some(&dirs)), Ok(sh));
        let sb = Shebang::parse(b"#!/usr/bin/env no-such-program-x").unwrap();
        assert!(sb
            .program(Some(&dirs))
            .unwrap_err()
            .contains("not found in PATH"));
    }
}
