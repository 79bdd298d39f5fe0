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

use crate::program::Shebang;
use object::read::elf::{ElfFile, FileHeader, NoteIterator, ProgramHeader, SectionHeader};
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
    let header = file.elf_header();
    let mut info = ElfInfo {
        class64: header.is_class_64(),
        machine: header.e_machine(file.endian()).0,
        ..ElfInfo::default()
    };
    read_program_headers(&file, data, &mut info);
    read_go_sections_and_symbols(&file, data, &mut info);
    read_dynamic_table(&file, &mut info);
    read_dynamic_symbols(&file, &mut info);
    Ok(info)
}

/// The interpreter, whether there is a dynamic segment, a Go build ID note.
fn read_program_headers<Elf: FileHeader<Endian = Endianness>>(
    file: &ElfFile<'_, Elf>,
    data: &[u8],
    info: &mut ElfInfo,
) {
    let endian = file.endian();
    for ph in file.elf_program_headers() {
        if let Ok(Some(interp)) = ph.interpreter(endian, data) {
            info.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
        if ph.p_type(endian) == elf::PT_DYNAMIC {
            info.has_dynamic = true;
        }
        if has_go_note(ph.notes(endian, data), endian) {
            push_once(&mut info.go_evidence, "a Go build ID note");
        }
    }
}

/// Go's marks in the section table and the symbol table.
fn read_go_sections_and_symbols<Elf: FileHeader<Endian = Endianness>>(
    file: &ElfFile<'_, Elf>,
    data: &[u8],
    info: &mut ElfInfo,
) {
    let endian = file.endian();
    for sh in file.elf_section_table().iter() {
        if has_go_note(sh.notes(endian, data), endian) {
            push_once(&mut info.go_evidence, "a Go build ID note");
        }
    }
    for section in file.sections() {
        match section.name() {
            Ok(".go.buildinfo") => push_once(&mut info.go_evidence, "a .go.buildinfo section"),
            Ok(".gopclntab") => push_once(&mut info.go_evidence, "a .gopclntab section"),
            _ => {}
        }
    }
    if file.symbols().any(|sym| sym.name() == Ok("runtime.main")) {
        push_once(&mut info.go_evidence, "the runtime.main symbol");
    }
}

fn has_go_note<Elf: FileHeader<Endian = Endianness>>(
    notes: object::read::Result<Option<NoteIterator<'_, Elf>>>,
    endian: Endianness,
) -> bool {
    let Ok(Some(mut notes)) = notes else {
        return false;
    };
    while let Ok(Some(note)) = notes.next() {
        if note.name() == b"Go" && note.n_type(endian) == elf::NT_GO_BUILD_ID {
            return true;
        }
    }
    false
}

/// DT_NEEDED, DT_RPATH, DT_RUNPATH.
fn read_dynamic_table<Elf: FileHeader<Endian = Endianness>>(
    file: &ElfFile<'_, Elf>,
    info: &mut ElfInfo,
) {
    let Ok(table) = file.elf_dynamic_table() else {
        return;
    };
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

/// The imports (undefined dynamic symbols), and a dynamic runtime.main.
fn read_dynamic_symbols<Elf: FileHeader<Endian = Endianness>>(
    file: &ElfFile<'_, Elf>,
    info: &mut ElfInfo,
) {
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

/// `stallguard check PATH`: gather (read the program and the libraries it loads), classify
/// (what the guard makes of their imports), render (the report and the exit status).
pub fn check(path: &Path) -> Result<Report, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let info = read_elf(&data).map_err(|e| format!("{}: {e}", path.display()))?;
    let shown = path.display().to_string();
    if let Some(why) = refusal(&info, native_machine()) {
        return Ok(Report {
            text: format!("{shown}: not guardable: {why}\n"),
            status: 1,
        });
    }
    let gathered = gather(path, info);
    let classified = classify(&gathered.objects);
    Ok(render(&shown, &gathered, &classified))
}

/// `stallguard check PROGRAM`: a bare name is looked up in `PATH` (as `run` does; else taken
/// as a file here); a script is judged by its `#!` interpreter, and the report says so.
pub fn check_program(arg: &Path) -> Result<Report, String> {
    let path = crate::program::which(arg).unwrap_or_else(|| arg.to_path_buf());
    let head = read_head(&path)?;
    let Some(shebang) = Shebang::parse(&head) else {
        return check(&path);
    };
    let interpreter = shebang
        .program(std::env::var_os("PATH").as_deref())
        .map_err(|e| format!("{}: a script, but {e}", path.display()))?;
    let mut report = check(&interpreter).map_err(|e| {
        format!(
            "{}: a script ({}), and its interpreter: {e}",
            path.display(),
            shebang.line()
        )
    })?;
    report.text = script_note(&path, &shebang, &interpreter) + &report.text;
    Ok(report)
}

/// The first line of a script's report: what is checked instead of it, and why.
fn script_note(script: &Path, shebang: &Shebang, interpreter: &Path) -> String {
    format!(
        "{}: a script ({}): the library is loaded into its interpreter, so this checks {}\n",
        script.display(),
        shebang.line(),
        interpreter.display()
    )
}

/// The first bytes of a file (enough for a `#!` line).
fn read_head(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(head)
}

/// `ELF 64-bit x86-64`.
fn kind(info: &ElfInfo) -> String {
    format!(
        "ELF {}-bit {}",
        if info.class64 { 64 } else { 32 },
        machine_name(info.machine)
    )
}

/// Why the program cannot be guarded whatever it imports (another machine, Go, static, musl),
/// judged on its own ELF file; `None` when its imports are worth a look.
fn refusal(info: &ElfInfo, native: Option<u16>) -> Option<String> {
    if let Some(native) = native.filter(|n| *n != info.machine) {
        return Some(format!(
            "{}, and the library is built for {}",
            kind(info),
            machine_name(native)
        ));
    }
    if !info.go_evidence.is_empty() {
        return Some(format!(
            "a Go program ({}): Go makes its network calls directly to the kernel, so the hooks \
             never see them",
            info.go_evidence.join(", ")
        ));
    }
    if info.interpreter.is_none() && info.needed.is_empty() {
        return Some(format!(
            "{}, statically linked: there is no dynamic loader to preload the library and no \
             libc calls to interpose",
            kind(info)
        ));
    }
    match &info.interpreter {
        Some(interp) if interp.contains("musl") => Some(format!(
            "linked against musl ({interp}); the library is built for glibc"
        )),
        _ => None,
    }
}

/// The program or one of the libraries it loads.
pub struct LoadedObject {
    /// The program's path as given, or the library's DT_NEEDED name.
    pub name: String,
    pub path: PathBuf,
    pub info: ElfInfo,
}

/// What the loader would load: the program first, then its libraries breadth first.
pub struct Gathered {
    pub objects: Vec<LoadedObject>,
    /// Libraries that could not be found or read.
    pub missing: Vec<String>,
}

/// A library to find: its name and where the loader would look.
struct Needed {
    name: String,
    /// The object that needs it (its directory is `$ORIGIN`).
    origin: PathBuf,
    rpath: Vec<String>,
    runpath: Vec<String>,
}

/// The libraries `info` (the object at `origin`) needs.
fn needed_by(origin: &Path, info: &ElfInfo) -> Vec<Needed> {
    // A library's own $ORIGIN is its directory; its rpath does not apply to its dependencies'
    // search beyond that (RUNPATH), a good approximation.
    info.needed
        .iter()
        .map(|name| Needed {
            name: name.clone(),
            origin: origin.to_path_buf(),
            rpath: info.rpath.clone(),
            runpath: info.runpath.clone(),
        })
        .collect()
}

/// Reads the program's libraries, transitively (at most 512 objects).
fn gather(path: &Path, info: ElfInfo) -> Gathered {
    let resolver = Resolver {
        cache: ld_cache(),
        ld_library_path: std::env::var("LD_LIBRARY_PATH")
            .map(|s| split_path(&s))
            .unwrap_or_default(),
        machine: info.machine,
        class64: info.class64,
    };
    let mut queue = needed_by(path, &info);
    let mut gathered = Gathered {
        objects: vec![LoadedObject {
            name: path.display().to_string(),
            path: path.to_path_buf(),
            info,
        }],
        missing: Vec::new(),
    };
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut i = 0;
    while i < queue.len() && gathered.objects.len() < 512 {
        let needed = &queue[i];
        i += 1;
        if !seen.insert(needed.name.clone()) {
            continue;
        }
        let found = resolver.resolve(&needed.name, &needed.origin, &needed.rpath, &needed.runpath);
        let lib = found.and_then(|p| Some((read_elf(&std::fs::read(&p).ok()?).ok()?, p)));
        match lib {
            None => gathered.missing.push(needed.name.clone()),
            Some((lib, p)) => {
                let more = needed_by(&p, &lib);
                gathered.objects.push(LoadedObject {
                    name: needed.name.clone(),
                    path: p,
                    info: lib,
                });
                queue.extend(more);
            }
        }
    }
    gathered
}

/// One object's imports, as the guard sees them.
#[derive(Debug, PartialEq, Eq)]
pub struct ObjectImports {
    /// The name, with the path when it is a library.
    pub label: String,
    /// Hooked functions it imports: the hooks see these calls.
    pub hooked: Vec<&'static str>,
    /// I/O functions the hooks never see.
    pub bypassing: Vec<String>,
}

/// Where the program's connections come from.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepts {
    /// The program itself imports accept/accept4.
    Itself,
    /// Only these libraries do.
    Through(Vec<String>),
    /// Nothing accepts; `socket_calls`: socket functions are imported somewhere; `connects`:
    /// the program itself calls connect.
    Never { socket_calls: bool, connects: bool },
}

/// What the guard makes of a program's imports (pure: built from the objects' import sets).
#[derive(Debug, PartialEq, Eq)]
pub struct Classified {
    /// Every object but libc and the loader, in load order.
    pub objects: Vec<ObjectImports>,
    pub accepts: Accepts,
    /// Stdio reading functions the program imports along with fdopen (stdio on sockets).
    pub stdio_reads: Vec<&'static str>,
}

/// Classifies the imports of `objects` (the program first).
pub fn classify(objects: &[LoadedObject]) -> Classified {
    let program = &objects[0];
    let others: Vec<&LoadedObject> = objects
        .iter()
        .filter(|o| !is_libc_or_loader(&o.name))
        .collect();
    Classified {
        objects: others
            .iter()
            .map(|o| object_imports(o, &program.path))
            .collect(),
        accepts: accepts(&program.info.imports, &others),
        stdio_reads: stdio_reads(&program.info.imports),
    }
}

fn object_imports(object: &LoadedObject, program: &Path) -> ObjectImports {
    let imports = &object.info.imports;
    ObjectImports {
        label: if object.path == program {
            object.name.clone()
        } else {
            format!("{} ({})", object.name, object.path.display())
        },
        hooked: HOOKED
            .iter()
            .copied()
            .filter(|h| imports.contains(*h))
            .collect(),
        bypassing: imports
            .iter()
            .filter(|s| BYPASS.contains(&s.as_str()) || s.starts_with("io_uring_"))
            .cloned()
            .collect(),
    }
}

fn imports_any(imports: &BTreeSet<String>, names: &[&str]) -> bool {
    names.iter().any(|n| imports.contains(*n))
}

fn accepts(program: &BTreeSet<String>, objects: &[&LoadedObject]) -> Accepts {
    if imports_any(program, ACCEPT) {
        return Accepts::Itself;
    }
    let acceptors: Vec<String> = objects
        .iter()
        .filter(|o| imports_any(&o.info.imports, ACCEPT))
        .map(|o| o.name.clone())
        .collect();
    if !acceptors.is_empty() {
        return Accepts::Through(acceptors);
    }
    Accepts::Never {
        socket_calls: objects
            .iter()
            .any(|o| imports_any(&o.info.imports, SOCKET_ONLY)),
        connects: program.contains("connect"),
    }
}

/// Judged on the program itself: libraries such as libcrypto import fdopen and fgets for
/// files, which would make every TLS server look like a stdio one.
fn stdio_reads(program: &BTreeSet<String>) -> Vec<&'static str> {
    if !program.contains("fdopen") {
        return Vec::new();
    }
    STDIO_READS
        .iter()
        .copied()
        .filter(|n| program.contains(*n))
        .collect()
}

/// The report: what the program is, its hooked imports, its libraries, the verdict, warnings.
pub fn render(shown: &str, gathered: &Gathered, c: &Classified) -> Report {
    let program = &gathered.objects[0].info;
    let mut out = format!(
        "{shown}: {}, dynamically linked{}\n",
        kind(program),
        program
            .interpreter
            .as_ref()
            .map(|i| format!(" (interpreter {i})"))
            .unwrap_or_default()
    );
    out += "  hooked functions imported:\n";
    let hooked = indented_lists(c.objects.iter().map(|o| (&o.label, &o.hooked[..])));
    out += if hooked.is_empty() {
        "    (none)\n"
    } else {
        hooked.as_str()
    };
    if gathered.objects.len() > 1 {
        out += "  libraries:\n";
        for o in &gathered.objects[1..] {
            let _ = writeln!(out, "    {} => {}", o.name, o.path.display());
        }
    }
    let status = render_verdict(&mut out, shown, &c.accepts);
    for w in warnings(gathered, c) {
        let _ = writeln!(out, "  warning: {w}");
    }
    Report { text: out, status }
}

/// `    label: a b c` lines, one per non-empty list.
fn indented_lists<'a, S: AsRef<str> + 'a>(
    lists: impl Iterator<Item = (&'a String, &'a [S])>,
) -> String {
    let mut out = String::new();
    for (label, list) in lists.filter(|(_, l)| !l.is_empty()) {
        let names: Vec<&str> = list.iter().map(AsRef::as_ref).collect();
        let _ = writeln!(out, "    {label}: {}", names.join(" "));
    }
    out
}

/// The verdict line(s); returns the exit status.
fn render_verdict(out: &mut String, shown: &str, accepts: &Accepts) -> i32 {
    match accepts {
        Accepts::Itself => {
            let _ = writeln!(
                out,
                "{shown}: guardable: it accepts connections through hooked functions"
            );
            0
        }
        Accepts::Through(acceptors) => {
            let _ = writeln!(
                out,
                "{shown}: guardable if it accepts its connections through {} (the program \
                 itself imports no accept/accept4)",
                acceptors.join(", ")
            );
            0
        }
        Accepts::Never {
            socket_calls,
            connects,
        } => {
            let _ = writeln!(
                out,
                "{shown}: not guardable: {}; run as an inetd service (the connection on fds \
                 0-2) it would be adopted and judged by kernel counters only (STALLGUARD_ADOPT)",
                if *socket_calls {
                    "it never accepts a connection (no accept/accept4 in it or its libraries)"
                } else {
                    "it imports no socket functions (no accept/accept4)"
                }
            );
            if *connects {
                out.push_str(
                    "  note: it opens connections itself (connect): STALLGUARD_OUTBOUND can put \
                     deadlines on those\n",
                );
            }
            1
        }
    }
}

fn warnings(gathered: &Gathered, c: &Classified) -> Vec<String> {
    let mut warnings = Vec::new();
    if !gathered.missing.is_empty() {
        warnings.push(format!(
            "libraries not found (their imports are unknown): {}",
            gathered.missing.join(" ")
        ));
    }
    if !c.stdio_reads.is_empty() {
        warnings.push(format!(
            "stdio on sockets likely (imports fdopen and {}): glibc reads those sockets \
             internally, so connections read through stdio are judged by kernel counters only \
             where adopted, and otherwise only on the waits the hooks see",
            c.stdio_reads.join(" ")
        ));
    }
    let bypassing = indented_lists(c.objects.iter().map(|o| (&o.label, &o.bypassing[..])));
    if !bypassing.is_empty() {
        warnings.push(format!(
            "imports I/O the hooks never see (if used on client sockets, those waits are not \
             charged):\n{}",
            bypassing.trim_end_matches('\n')
        ));
    }
    warnings
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
        assert_eq!(HOOKED.len(), 44);
        for f in [
            "__read_chk",
            "__recv_chk",
            "__recvfrom_chk",
            "__poll_chk",
            "sendfile64",
            "fcntl64",
            "SSL_read",
            "SSL_read_ex",
            "SSL_write",
            "SSL_write_ex",
            "dlclose",
            "pthread_cancel",
        ] {
            assert!(HOOKED.contains(&f), "{f}");
        }
        // Threads are counted by glibc, not hooked (src/abi/route.rs).
        assert!(!HOOKED.contains(&"pthread_create") && !HOOKED.contains(&"thrd_create"));
    }

    fn elf(imports: &[&str]) -> ElfInfo {
        ElfInfo {
            class64: true,
            machine: elf::EM_X86_64.0,
            interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
            needed: vec!["libc.so.6".into()],
            imports: imports.iter().map(|s| s.to_string()).collect(),
            has_dynamic: true,
            ..ElfInfo::default()
        }
    }

    fn object(name: &str, imports: &[&str]) -> LoadedObject {
        LoadedObject {
            name: name.into(),
            path: PathBuf::from(format!("/lib/{name}")),
            info: elf(imports),
        }
    }

    /// The program `/srv/server` with `imports`, then `libs`.
    fn program(imports: &[&str], libs: Vec<LoadedObject>) -> Vec<LoadedObject> {
        let mut objects = vec![LoadedObject {
            name: "/srv/server".into(),
            path: PathBuf::from("/srv/server"),
            info: elf(imports),
        }];
        objects.extend(libs);
        objects
    }

    #[test]
    fn refusals_are_judged_on_the_program_alone() {
        let x86 = Some(elf::EM_X86_64.0);
        assert_eq!(refusal(&elf(&["accept"]), x86), None);
        assert_eq!(refusal(&elf(&["accept"]), None), None);
        let arm = refusal(&elf(&[]), Some(elf::EM_AARCH64.0)).unwrap();
        assert_eq!(
            arm,
            "ELF 64-bit x86-64, and the library is built for aarch64"
        );
        let go = ElfInfo {
            go_evidence: vec!["a .gopclntab section".into()],
            ..elf(&["accept"])
        };
        assert!(refusal(&go, x86)
            .unwrap()
            .starts_with("a Go program (a .gopclntab section)"));
        let static_ = ElfInfo {
            interpreter: None,
            needed: vec![],
            ..elf(&[])
        };
        assert!(refusal(&static_, x86)
            .unwrap()
            .contains("statically linked"));
        let musl = ElfInfo {
            interpreter: Some("/lib/ld-musl-x86_64.so.1".into()),
            ..elf(&["accept"])
        };
        assert!(refusal(&musl, x86)
            .unwrap()
            .starts_with("linked against musl"));
    }

    #[test]
    fn imports_are_sorted_into_hooked_and_bypassing() {
        let objects = program(
            &["accept4", "read", "recvmmsg", "printf", "io_uring_submit"],
            vec![
                object("libc.so.6", &["accept", "recvmmsg"]),
                object("libtls.so.1", &["send", "sendmmsg"]),
                object("libm.so.6", &["cos"]),
            ],
        );
        let c = classify(&objects);
        assert_eq!(
            c.objects,
            vec![
                ObjectImports {
                    label: "/srv/server".into(),
                    hooked: vec!["accept4", "read"],
                    bypassing: vec!["io_uring_submit".into(), "recvmmsg".into()],
                },
                ObjectImports {
                    label: "libtls.so.1 (/lib/libtls.so.1)".into(),
                    hooked: vec!["send"],
                    bypassing: vec!["sendmmsg".into()],
                },
                ObjectImports {
                    label: "libm.so.6 (/lib/libm.so.6)".into(),
                    hooked: vec![],
                    bypassing: vec![],
                },
            ],
            "libc and the loader define the hooked functions: left out"
        );
        assert_eq!(c.accepts, Accepts::Itself);
        assert!(c.stdio_reads.is_empty());
    }

    #[test]
    fn where_connections_come_from() {
        let through = classify(&program(
            &["read"],
            vec![object("libevent.so.7", &["accept4"])],
        ));
        assert_eq!(
            through.accepts,
            Accepts::Through(vec!["libevent.so.7".into()])
        );
        let libc_only = classify(&program(
            &["connect"],
            vec![object("libc.so.6", &["accept"])],
        ));
        assert_eq!(
            libc_only.accepts,
            Accepts::Never {
                socket_calls: true,
                connects: true
            }
        );
        let files = classify(&program(&["read", "write"], vec![]));
        assert_eq!(
            files.accepts,
            Accepts::Never {
                socket_calls: false,
                connects: false
            }
        );
    }

    #[test]
    fn stdio_reads_count_only_with_fdopen_in_the_program() {
        let stdio = classify(&program(&["fdopen", "fgets", "fread", "puts"], vec![]));
        assert_eq!(stdio.stdio_reads, vec!["fgets", "fread"]);
        let files = classify(&program(
            &["fgets"],
            vec![object("libcrypto.so.3", &["fdopen", "fgets"])],
        ));
        assert!(files.stdio_reads.is_empty());
    }

    #[test]
    fn the_report_lists_then_concludes_then_warns() {
        let gathered = Gathered {
            objects: program(&["accept", "recvmmsg"], vec![object("libc.so.6", &[])]),
            missing: vec!["libgone.so.1".into()],
        };
        let report = render("/srv/server", &gathered, &classify(&gathered.objects));
        assert_eq!(report.status, 0);
        assert_eq!(
            report.text,
            "/srv/server: ELF 64-bit x86-64, dynamically linked (interpreter /lib64/ld-linux-x86-64.so.2)
  hooked functions imported:
    /srv/server: accept
  libraries:
    libc.so.6 => /lib/libc.so.6
/srv/server: guardable: it accepts connections through hooked functions
  warning: libraries not found (their imports are unknown): libgone.so.1
  warning: imports I/O the hooks never see (if used on client sockets, those waits are not charged):
    /srv/server: recvmmsg
"
        );

        let gathered = Gathered {
            objects: program(&["connect", "fdopen", "getline"], vec![]),
            missing: vec![],
        };
        let report = render("srv", &gathered, &classify(&gathered.objects));
        assert_eq!(report.status, 1);
        let lines: Vec<&str> = report.text.lines().collect();
        assert_eq!(lines[2], "    /srv/server: connect");
        assert!(lines[3].starts_with("srv: not guardable: it never accepts a connection"));
        assert!(lines[4].starts_with("  note: it opens connections itself (connect)"));
        assert!(
            lines[5].starts_with("  warning: stdio on sockets likely (imports fdopen and getline)")
        );
        assert_eq!(lines.len(), 6);
    }
}
