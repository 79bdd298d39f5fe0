//! `stallguard check BINARY`: can the guard see this program's connections?
//!
//! Reads the ELF file and its shared libraries (DT_NEEDED, transitively) with the `object`
//! crate: static and Go binaries make no dynamic libc calls the hooks could see; otherwise it
//! lists which of the hooked functions each object imports.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::elf;
use object::read::elf::{ElfFile, FileHeader, ProgramHeader, SectionHeader};
use object::{Endianness, FileKind, Object, ObjectSection, ObjectSymbol};

/// Every function the shim interposes (its own table, src/interpose.rs).
pub const HOOKED: &[&str] = stallguard_inventory::NAMES;

/// Where a program gets its connections from (one is needed for there to be anything to guard).
const ACCEPT: &[&str] = &["accept", "accept4"];
/// Calls that only make sense on sockets.
const SOCKET_ONLY: &[&str] = &[
    "accept",
    "accept4",
    "listen",
    "connect",
    "recv",
    "recvfrom",
    "recvmsg",
    "__recv_chk",
    "__recvfrom_chk",
    "send",
    "sendto",
    "sendmsg",
    "shutdown",
];
/// Stdio reading: on a socket (after fdopen) glibc calls the kernel internally, unseen.
const STDIO_READS: &[&str] = &[
    "fgets",
    "fgets_unlocked",
    "__fgets_chk",
    "__fgets_unlocked_chk",
    "fread",
    "fread_unlocked",
    "__fread_chk",
    "__fread_unlocked_chk",
    "getc",
    "_IO_getc",
    "getc_unlocked",
    "fgetc",
    "fgetc_unlocked",
    "getline",
    "getdelim",
    "__getdelim",
    "fscanf",
    "__isoc99_fscanf",
    "__isoc23_fscanf",
    "vfscanf",
    "__isoc99_vfscanf",
];
/// I/O the hooks never see.
/// (`syscall` and `splice` are left out: nearly every program imports them for other uses.)
const BYPASS: &[&str] = &[
    "recvmmsg",
    "sendmmsg",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_queue_init",
    "io_uring_queue_init_params",
];

#[derive(Debug, Default)]
pub struct ElfInfo {
    pub class64: bool,
    pub machine: u16,
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
    /// Undefined dynamic symbols (imports).
    pub imports: BTreeSet<String>,
    /// Why this looks like a Go program (empty: not Go).
    pub go_evidence: Vec<String>,
    pub has_dynamic: bool,
}

/// Parses an ELF file. Err: not an ELF file, or malformed.
pub fn read_elf(data: &[u8]) -> Result<ElfInfo, String> {
    match FileKind::parse(data) {
        Ok(FileKind::Elf32) => parse::<elf::FileHeader32<Endianness>>(data),
        Ok(FileKind::Elf64) => parse::<elf::FileHeader64<Endianness>>(data),
        Ok(other) => Err(format!("not an ELF file ({other:?})")),
        Err(_) => Err("not an ELF file".into()),
    }
}

fn parse<Elf: FileHeader<Endian = Endianness>>(data: &[u8]) -> Result<ElfInfo, String> {
    let file = ElfFile::<Elf>::parse(data).map_err(|e| format!("malformed ELF file: {e}"))?;
    let endian = file.endian();
    let header = file.elf_header();
    let mut info = ElfInfo {
        class64: header.is_class_64(),
        machine: header.e_machine(endian).0,
        ..ElfInfo::default()
    };
    for ph in file.elf_program_headers() {
        if let Ok(Some(interp)) = ph.interpreter(endian, data) {
            info.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
        if ph.p_type(endian) == elf::PT_DYNAMIC {
            info.has_dynamic = true;
        }
        if let Ok(Some(mut notes)) = ph.notes(endian, data) {
            while let Ok(Some(note)) = notes.next() {
                if note.name() == b"Go" && note.n_type(endian) == elf::NT_GO_BUILD_ID {
                    push_once(&mut info.go_evidence, "a Go build ID note");
                }
            }
        }
    }
    let sections = file.elf_section_table();
    for sh in sections.iter() {
        if let Ok(Some(mut notes)) = sh.notes(endian, data) {
            while let Ok(Some(note)) = notes.next() {
                if note.name() == b"Go" && note.n_type(endian) == elf::NT_GO_BUILD_ID {
                    push_once(&mut info.go_evidence, "a Go build ID note");
                }
            }
        }
    }
    for section in file.sections() {
        match section.name() {
            Ok(".go.buildinfo") => push_once(&mut info.go_evidence, "a .go.buildinfo section"),
            Ok(".gopclntab") => push_once(&mut info.go_evidence, "a .gopclntab section"),
            _ => {}
        }
    }
    for sym in file.symbols() {
        if sym.name() == Ok("runtime.main") {
            push_once(&mut info.go_evidence, "the runtime.main symbol");
        }
    }
    if let Ok(table) = file.elf_dynamic_table() {
        for d in table.iter() {
            let text = || {
                table
                    .string(d)
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .ok()
            };
            match d.tag {
                elf::DT_NEEDED => info.needed.extend(text()),
                elf::DT_RPATH => info.rpath.extend(text().iter().flat_map(|s| split_path(s))),
                elf::DT_RUNPATH => info
                    .runpath
                    .extend(text().iter().flat_map(|s| split_path(s))),
                _ => {}
            }
        }
    }
    for sym in file.dynamic_symbols() {
        if sym.is_undefined() {
            if let Ok(name) = sym.name() {
                if !name.is_empty() {
                    info.imports.insert(name.to_string());
                }
            }
        } else if sym.name() == Ok("runtime.main") {
            push_once(&mut info.go_evidence, "the runtime.main symbol");
        }
    }
    Ok(info)
}

fn push_once(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

fn split_path(s: &str) -> Vec<String> {
    s.split(':')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

fn machine_name(m: u16) -> String {
    match m {
        m if m == elf::EM_X86_64.0 => "x86-64".into(),
        m if m == elf::EM_386.0 => "i386".into(),
        m if m == elf::EM_AARCH64.0 => "aarch64".into(),
        m if m == elf::EM_ARM.0 => "arm".into(),
        m if m == elf::EM_RISCV.0 => "riscv".into(),
        m if m == elf::EM_PPC64.0 => "ppc64".into(),
        m if m == elf::EM_S390.0 => "s390".into(),
        other => format!("machine {other}"),
    }
}

/// The ELF machine this tool (and so the library next to it) was built for.
fn native_machine() -> Option<u16> {
    match std::env::consts::ARCH {
        "x86_64" => Some(elf::EM_X86_64.0),
        "aarch64" => Some(elf::EM_AARCH64.0),
        "x86" => Some(elf::EM_386.0),
        "arm" => Some(elf::EM_ARM.0),
        "riscv64" => Some(elf::EM_RISCV.0),
        "powerpc64" => Some(elf::EM_PPC64.0),
        "s390x" => Some(elf::EM_S390.0),
        _ => None,
    }
}

/// `ldconfig -p`: soname → paths (all architectures; filtered by machine when resolving).
fn ld_cache() -> HashMap<String, Vec<PathBuf>> {
    let mut map: HashMap<String, Vec<PathBuf>> = HashMap::new();
    for ldconfig in ["ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"] {
        let Ok(out) = Command::new(ldconfig).arg("-p").output() else {
            continue;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let line = line.trim();
            let Some((left, path)) = line.split_once(" => ") else {
                continue;
            };
            let soname = left.split_whitespace().next().unwrap_or("");
            map.entry(soname.to_string())
                .or_default()
                .push(PathBuf::from(path.trim()));
        }
        break;
    }
    map
}

const DEFAULT_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
];

struct Resolver {
    cache: HashMap<String, Vec<PathBuf>>,
    ld_library_path: Vec<String>,
    machine: u16,
    class64: bool,
}

impl Resolver {
    /// The file the dynamic loader would pick for `name`, needed by the object at `origin`
    /// with the given rpath/runpath (the loader's order: DT_RPATH when there is no DT_RUNPATH,
    /// LD_LIBRARY_PATH, DT_RUNPATH, the ld.so cache, the default directories).
    fn resolve(
        &self,
        name: &str,
        origin: &Path,
        rpath: &[String],
        runpath: &[String],
    ) -> Option<PathBuf> {
        if name.contains('/') {
            let p = PathBuf::from(name);
            return p.exists().then_some(p);
        }
        let origin_dir = origin
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let expand = |dir: &str| {
            PathBuf::from(
                dir.replace("${ORIGIN}", &origin_dir.to_string_lossy())
                    .replace("$ORIGIN", &origin_dir.to_string_lossy()),
            )
        };
        let mut dirs: Vec<PathBuf> = Vec::new();
        if runpath.is_empty() {
            dirs.extend(rpath.iter().map(|d| expand(d)));
        }
        dirs.extend(self.ld_library_path.iter().map(PathBuf::from));
        dirs.extend(runpath.iter().map(|d| expand(d)));
        let mut candidates: Vec<PathBuf> = dirs.iter().map(|d| d.join(name)).collect();
        candidates.extend(self.cache.get(name).cloned().unwrap_or_default());
        candidates.extend(DEFAULT_DIRS.iter().map(|d| Path::new(d).join(name)));
        candidates.into_iter().find(|p| self.fits(p))
    }

    /// Same class and machine as the program (ldconfig lists other architectures too).
    fn fits(&self, p: &Path) -> bool {
        let Ok(data) = std::fs::read(p) else {
            return false;
        };
        matches!(read_elf(&data), Ok(i) if i.machine == self.machine && i.class64 == self.class64)
    }
}

/// What `check` concluded.
pub struct Report {
    pub text: String,
    /// 0 guardable, 1 not guardable.
    pub status: i32,
}

/// The libraries that define the hooked functions rather than import them.
fn is_libc_or_loader(soname: &str) -> bool {
    soname.starts_with("libc.so") || soname.starts_with("ld-linux") || soname.starts_with("ld64.so")
}

pub fn check(path: &Path) -> Result<Report, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let info = read_elf(&data).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = String::new();
    let shown = path.display();
    let not = |out: &mut String, why: String| -> Result<Report, String> {
        let _ = writeln!(out, "{shown}: not guardable: {why}");
        Ok(Report {
            text: std::mem::take(out),
            status: 1,
        })
    };
    let kind = format!(
        "ELF {}-bit {}",
        if info.class64 { 64 } else { 32 },
        machine_name(info.machine)
    );
    if let Some(native) = native_machine() {
        if info.machine != native {
            return not(
                &mut out,
                format!(
                    "{kind}, and the library is built for {}",
                    machine_name(native)
                ),
            );
        }
    }
    if !info.go_evidence.is_empty() {
        return not(
            &mut out,
            format!(
                "a Go program ({}): Go makes its network calls directly to the kernel, so the \
                 hooks never see them",
                info.go_evidence.join(", ")
            ),
        );
    }
    if info.interpreter.is_none() && info.needed.is_empty() {
        return not(
            &mut out,
            format!(
                "{kind}, statically linked: there is no dynamic loader to preload the library \
                 and no libc calls to interpose"
            ),
        );
    }
    if let Some(interp) = &info.interpreter {
        if interp.contains("musl") {
            return not(
                &mut out,
                format!("linked against musl ({interp}); the library is built for glibc"),
            );
        }
    }

    // The program and every library it loads, breadth first.
    let resolver = Resolver {
        cache: ld_cache(),
        ld_library_path: std::env::var("LD_LIBRARY_PATH")
            .map(|s| split_path(&s))
            .unwrap_or_default(),
        machine: info.machine,
        class64: info.class64,
    };
    let mut objects: Vec<(String, PathBuf, ElfInfo)> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    let mut queue: Vec<(String, PathBuf, Vec<String>, Vec<String>)> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for n in &info.needed {
        queue.push((
            n.clone(),
            path.to_path_buf(),
            info.rpath.clone(),
            info.runpath.clone(),
        ));
    }
    objects.push((path.display().to_string(), path.to_path_buf(), info));
    let mut i = 0;
    while i < queue.len() && objects.len() < 512 {
        let (name, origin, rpath, runpath) = queue[i].clone();
        i += 1;
        if !seen.insert(name.clone()) {
            continue;
        }
        match resolver.resolve(&name, &origin, &rpath, &runpath) {
            None => missing.push(name),
            Some(p) => {
                let Ok(lib) = std::fs::read(&p)
                    .map_err(|_| ())
                    .and_then(|d| read_elf(&d).map_err(|_| ()))
                else {
                    missing.push(name);
                    continue;
                };
                for n in &lib.needed {
                    // A library's own $ORIGIN is its directory; its rpath does not apply to
                    // its dependencies' search beyond that (RUNPATH), a good approximation.
                    queue.push((n.clone(), p.clone(), lib.rpath.clone(), lib.runpath.clone()));
                }
                objects.push((name, p, lib));
            }
        }
    }

    let main = &objects[0].2;
    let _ = writeln!(
        out,
        "{shown}: {kind}, dynamically linked{}",
        main.interpreter
            .as_ref()
            .map(|i| format!(" (interpreter {i})"))
            .unwrap_or_default()
    );
    let mut all_imports: BTreeSet<String> = BTreeSet::new();
    let mut hooked_lines = Vec::new();
    let mut bypass_lines = Vec::new();
    for (name, p, lib) in &objects {
        if is_libc_or_loader(name) {
            continue;
        }
        all_imports.extend(lib.imports.iter().cloned());
        let hooked: Vec<&str> = HOOKED
            .iter()
            .copied()
            .filter(|h| lib.imports.contains(*h))
            .collect();
        let label = if p == path {
            name.clone()
        } else {
            format!("{name} ({})", p.display())
        };
        if !hooked.is_empty() {
            hooked_lines.push(format!("    {label}: {}", hooked.join(" ")));
        }
        let bypass: Vec<String> = lib
            .imports
            .iter()
            .filter(|s| BYPASS.contains(&s.as_str()) || s.starts_with("io_uring_"))
            .cloned()
            .collect();
        if !bypass.is_empty() {
            bypass_lines.push(format!("    {label}: {}", bypass.join(" ")));
        }
    }
    let _ = writeln!(out, "  hooked functions imported:");
    if hooked_lines.is_empty() {
        let _ = writeln!(out, "    (none)");
    }
    for l in &hooked_lines {
        let _ = writeln!(out, "{l}");
    }
    let libs: Vec<String> = objects[1..]
        .iter()
        .map(|(n, p, _)| format!("{n} => {}", p.display()))
        .collect();
    if !libs.is_empty() {
        let _ = writeln!(out, "  libraries:");
        for l in &libs {
            let _ = writeln!(out, "    {l}");
        }
    }
    let mut warnings = Vec::new();
    if !missing.is_empty() {
        warnings.push(format!(
            "libraries not found (their imports are unknown): {}",
            missing.join(" ")
        ));
    }
    let has = |names: &[&str]| names.iter().any(|n| all_imports.contains(*n));
    // Judged on the program itself: libraries such as libcrypto import fdopen and fgets for
    // files, which would make every TLS server look like a stdio one.
    let own = &objects[0].2.imports;
    if own.contains("fdopen") && STDIO_READS.iter().any(|n| own.contains(*n)) {
        let reads: Vec<&str> = STDIO_READS
            .iter()
            .copied()
            .filter(|n| own.contains(*n))
            .collect();
        warnings.push(format!(
            "stdio on sockets likely (imports fdopen and {}): glibc reads those sockets \
             internally, so connections read through stdio are judged by kernel counters only \
             where adopted, and otherwise only on the waits the hooks see",
            reads.join(" ")
        ));
    }
    if !bypass_lines.is_empty() {
        warnings.push(format!(
            "imports I/O the hooks never see (if used on client sockets, those waits are not \
             charged):\n{}",
            bypass_lines.join("\n")
        ));
    }
    let acceptors: Vec<String> = objects
        .iter()
        .filter(|(n, _, lib)| {
            !is_libc_or_loader(n) && ACCEPT.iter().any(|a| lib.imports.contains(*a))
        })
        .map(|(n, _, _)| n.clone())
        .collect();
    let status = if objects[0]
        .2
        .imports
        .iter()
        .any(|i| ACCEPT.contains(&i.as_str()))
    {
        let _ = writeln!(
            out,
            "{shown}: guardable: it accepts connections through hooked functions"
        );
        0
    } else if has(ACCEPT) {
        let _ = writeln!(
            out,
            "{shown}: guardable if it accepts its connections through {} (the program itself \
             imports no accept/accept4)",
            acceptors.join(", ")
        );
        0
    } else {
        let socketish = has(SOCKET_ONLY);
        let _ = writeln!(
            out,
            "{shown}: not guardable: {}; run as an inetd service (the connection on fds 0-2) it \
             would be adopted and judged by kernel counters only (STALLGUARD_ADOPT)",
            if socketish {
                "it never accepts a connection (no accept/accept4 in it or its libraries)"
            } else {
                "it imports no socket functions (no accept/accept4)"
            }
        );
        if objects[0].2.imports.contains("connect") {
            let _ = writeln!(
                out,
                "  note: it opens connections itself (connect): STALLGUARD_OUTBOUND can put \
                 deadlines on those"
            );
        }
        1
    };
    for w in warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    Ok(Report { text: out, status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_elf() {
        assert!(read_elf(b"#!/bin/sh\necho hi\n").is_err());
        assert!(read_elf(b"").is_err());
    }

    #[test]
    fn our_own_test_binary_is_a_dynamic_elf() {
        let exe = std::env::current_exe().unwrap();
        let info = read_elf(&std::fs::read(exe).unwrap()).unwrap();
        assert!(info.interpreter.is_some());
        assert!(info.needed.iter().any(|n| n.starts_with("libc.so")));
        assert!(info.imports.contains("write") || info.imports.contains("writev"));
        assert!(info.go_evidence.is_empty());
    }

    #[test]
    fn hooked_set_is_complete() {
        assert_eq!(HOOKED.len(), 35);
        for f in [
            "__read_chk",
            "__recv_chk",
            "__recvfrom_chk",
            "__poll_chk",
            "sendfile64",
            "fcntl64",
        ] {
            assert!(HOOKED.contains(&f), "{f}");
        }
    }
}
