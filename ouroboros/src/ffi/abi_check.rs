//! The binding's C declarations checked against the installed headers.
//!
//! [`table`] lists every checked item: the size and alignment of each
//! `#[repr(C)]` struct, the offset and size of each of its fields, every
//! constant copied from a header (error numbers, flow and FRCT flags,
//! `fccntl` commands, `enum fqtype`, the QoS presets field by field, name
//! sizes, the version in the sonames) and the prototype of every function
//! the binding loads. Each item pairs the value Rust has with a C
//! expression; [`binding_matches_the_installed_headers`] writes a C program
//! that prints every expression, compiles it with `cc` against
//! `<ouroboros/*.h>`, runs it and compares line by line.
//!
//! Leaving something out of the table is hard:
//! - the struct and function lists destructure the Rust struct (`RawQos`,
//!   `Lib`, …) and [`QoSSpec`] without `..`, so a field added to the
//!   binding and not to the table does not compile;
//! - the flag lists walk `bitflags::Flags::FLAGS` and [`FEventType::ALL`]
//!   goes through an exhaustive `match`, so a new flag or event type
//!   without its C name fails the test;
//! - [`every_declaration_is_in_the_table`] reads the crate's sources and
//!   fails for any `const` or `#[repr(C)]` struct that is neither checked
//!   nor in [`NOT_IN_HEADERS`] with the reason it cannot be, and for any
//!   `sym(…)` load whose symbol is not the one the table checks.

use std::ffi::{c_char, c_int, c_void};
use std::mem::{align_of, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use bitflags::Flags;
use libc::timespec;

use super::{
    FqType, FqueueT, FsetT, IrmFns, Lib, RawIpcpListInfo, RawNameInfo, RawNameSecPaths, RawQos,
    DEV_SONAME, FLOWGFLAGS, FLOWGQOSSPEC, FLOWGRXQLEN, FLOWGTXQLEN, FLOWSFLAGS, FLOWSRCVTIMEO,
    FLOWSSNDTIMEO, FRCTGFLAGS, FRCTSFLAGS, IRM_SONAME, LAYER_NAME_SIZE, LB_RR, NAME_PATH_SIZE,
    NAME_SIZE,
};
use crate::error::codes;
use crate::flow::{FlowProperties, FrctFlags};
use crate::fqueue::FEventType;
use crate::qos::{QoSSpec, DEFAULT_PEER_TIMEOUT_MS};

/// Constants of the crate that have no counterpart in the installed headers,
/// with the reason. Everything else must be in [`table`].
const NOT_IN_HEADERS: &[(&str, &str)] = &[
    (
        "IRM_SOCK_PATH",
        "IRM_SOCK_PATH of the build's sockets.h, not installed",
    ),
    (
        "IRM_MSG_LIST_IPCPS",
        "irm.proto (the IRMd protocol), not installed",
    ),
    (
        "IRM_MSG_REPLY",
        "irm.proto (the IRMd protocol), not installed",
    ),
    (
        "MAX_PACKET_SIZE",
        "largest packet-pool block, a build setting of Ouroboros",
    ),
    (
        "TX_RING_USABLE",
        "SSM_RBUFF_SIZE - 1, a build setting of Ouroboros",
    ),
    ("PROBE_TIMEOUT", "the binding's own"),
    ("PROBE_SOCK_ENV", "the binding's own"),
    ("READ_SLICE", "the binding's own"),
    ("WRITE_BACKOFF_MAX", "the binding's own"),
    ("TICK", "the binding's own"),
    ("ALIVE", "the binding's own flow state"),
    (
        "DOWN",
        "the binding's own flow state (the flag is checked too)",
    ),
    ("PEER", "the binding's own flow state"),
    ("ALL", "the list of FEventType variants, checked one by one"),
    ("with_timeout", "a QoSSpec builder, not a preset"),
];

/// One compared value.
struct Item {
    /// What the Rust side calls it; names the item in a failure.
    label: String,
    /// The Rust value.
    rust: i128,
    /// A C expression over the installed headers with the same meaning.
    c: String,
    /// A prototype check: `rust` is 1 and `c` is 1 when the types are
    /// compatible.
    prototype: bool,
}

/// The checked items, and the Rust identifiers they cover.
#[derive(Default)]
struct Table {
    items: Vec<Item>,
    covered: Vec<String>,
    /// `(field, symbol)` of every function checked.
    symbols: Vec<(String, String)>,
    /// Declarations the table cannot check (a flag without a C name).
    errors: Vec<String>,
}

impl Table {
    fn item<V>(&mut self, label: impl Into<String>, rust: V, c: impl Into<String>)
    where
        V: TryInto<i128> + Copy + std::fmt::Debug,
    {
        let label = label.into();
        let Ok(rust) = rust.try_into() else {
            self.errors
                .push(format!("{label}: {rust:?} does not fit in i128"));
            return;
        };
        self.items.push(Item {
            label,
            rust,
            c: c.into(),
            prototype: false,
        });
    }

    fn cover(&mut self, rust_ident: &str) {
        let ident = rust_ident.rsplit("::").next().unwrap_or(rust_ident).trim();
        self.covered.push(ident.to_owned());
    }

    /// A `#define` or enumerator with the same value as the Rust constant
    /// `rust_path`; its C name is the path's last segment unless given.
    fn constant<V>(&mut self, rust_path: &str, rust: V, c: Option<&str>)
    where
        V: TryInto<i128> + Copy + std::fmt::Debug,
    {
        let rust_path = rust_path.replace(' ', "");
        let ident = rust_path.rsplit("::").next().unwrap_or(&rust_path);
        let c = c.unwrap_or(ident).to_owned();
        self.cover(ident);
        self.item(rust_path.clone(), rust, c);
    }

    /// Every flag of a bitflags type, mapped to its C name by `names`.
    fn flags<F>(&mut self, ty: &str, names: &[(&str, &str)])
    where
        F: Flags,
        F::Bits: TryInto<i128> + Copy + std::fmt::Debug,
    {
        for flag in F::FLAGS {
            let name = flag.name();
            match names.iter().find(|(r, _)| *r == name) {
                Some((_, c)) => {
                    self.cover(name);
                    self.item(format!("{ty}::{name}"), flag.value().bits(), *c);
                }
                None => self
                    .errors
                    .push(format!("{ty}::{name} has no C name in the table")),
            }
        }
    }

    /// A function the binding loads: the Rust pointer type must be
    /// compatible with the type of the C function.
    fn function(&mut self, symbol: &str, field: &str, rust_c_type: String) {
        self.cover(field);
        self.items.push(Item {
            label: format!("prototype of {symbol}"),
            rust: 1,
            c: format!("__builtin_types_compatible_p(__typeof__(&{symbol}), {rust_c_type})"),
            prototype: true,
        });
        self.symbols.push((field.to_owned(), symbol.to_owned()));
    }
}

/// The C spelling of a Rust type used across the FFI boundary.
trait CType {
    fn c() -> String;
}

macro_rules! c_type {
    ($($t:ty => $c:literal),+ $(,)?) => {
        $(impl CType for $t {
            fn c() -> String {
                $c.to_owned()
            }
        })+
    };
}

// `c_int` is also `pid_t` (an `int` in C); `usize`/`isize` are `size_t`
// and `ssize_t`.
c_type!(
    () => "void",
    c_void => "void",
    c_int => "int",
    c_char => "char",
    bool => "_Bool",
    usize => "size_t",
    isize => "ssize_t",
    timespec => "struct timespec",
    FsetT => "fset_t",
    FqueueT => "fqueue_t",
    FqType => "enum fqtype",
    RawQos => "qosspec_t",
    RawNameSecPaths => "struct name_sec_paths",
    RawNameInfo => "struct name_info",
    RawIpcpListInfo => "struct ipcp_list_info",
);

impl<T: CType> CType for *const T {
    fn c() -> String {
        format!("{} const *", T::c())
    }
}

impl<T: CType> CType for *mut T {
    fn c() -> String {
        format!("{} *", T::c())
    }
}

impl<R: CType> CType for unsafe extern "C" fn() -> R {
    fn c() -> String {
        format!("{} (*)(void)", R::c())
    }
}

impl<R: CType, A: CType> CType for unsafe extern "C" fn(A) -> R {
    fn c() -> String {
        format!("{} (*)({})", R::c(), A::c())
    }
}

impl<R: CType, A: CType, B: CType> CType for unsafe extern "C" fn(A, B) -> R {
    fn c() -> String {
        format!("{} (*)({}, {})", R::c(), A::c(), B::c())
    }
}

impl<R: CType, A: CType, B: CType, C: CType> CType for unsafe extern "C" fn(A, B, C) -> R {
    fn c() -> String {
        format!("{} (*)({}, {}, {})", R::c(), A::c(), B::c(), C::c())
    }
}

impl<R: CType, A: CType, B: CType> CType for unsafe extern "C" fn(A, B, ...) -> R {
    fn c() -> String {
        format!("{} (*)({}, {}, ...)", R::c(), A::c(), B::c())
    }
}

/// The size of the field `f` selects.
fn field_size<S, F>(_f: fn(&S) -> &F) -> usize {
    size_of::<F>()
}

/// The C spelling of the type of the field `f` selects.
fn field_c_type<S, F: CType>(_f: fn(&S) -> &F) -> String {
    F::c()
}

/// The C name of a field: the Rust name unless given.
macro_rules! c_field {
    ($f:ident) => {
        stringify!($f)
    };
    ($f:ident, $c:literal) => {
        $c
    };
}

/// Checks a `#[repr(C)]` struct (its C name is its [`CType`]): size,
/// alignment, and the offset and size of each field. The pattern without `..` makes leaving a field out a compile
/// error.
macro_rules! c_struct {
    ($t:ident, $rust:ident { $($field:ident $(=> $cfield:literal)?),+ $(,)? }) => {{
        // rustc reports a field missing from this macro-made pattern as
        // "pattern requires `..` due to inaccessible fields".
        #[allow(dead_code)]
        fn every_field_is_listed(v: &$rust) {
            let $rust { $($field: _),+ } = v;
        }
        let name = stringify!($rust);
        let cty = <$rust as CType>::c();
        $t.cover(name);
        $t.item(format!("size of {name}"), size_of::<$rust>(), format!("sizeof({cty})"));
        $t.item(format!("alignment of {name}"), align_of::<$rust>(), format!("_Alignof({cty})"));
        $(
            let field = stringify!($field);
            let c = c_field!($field $(, $cfield)?);
            $t.item(
                format!("offset of {name}.{field}"),
                offset_of!($rust, $field),
                format!("offsetof({cty}, {c})"),
            );
            $t.item(
                format!("size of {name}.{field}"),
                field_size::<$rust, _>(|s| &s.$field),
                format!("sizeof((({cty} *)0)->{c})"),
            );
        )+
    }};
}

/// Checks the prototypes of the functions a struct of function pointers
/// holds; the `$other` fields are the struct's non-function fields. The
/// pattern without `..` makes leaving a function out a compile error.
macro_rules! c_functions {
    ($t:ident, $s:ident { $($field:ident => $sym:literal),+ $(,)? } $($other:ident),*) => {{
        // A missing field is reported as for `c_struct!`.
        #[allow(dead_code)]
        fn every_function_is_listed(v: &$s) {
            let $s { $($field: _,)+ $($other: _),* } = v;
        }
        $(
            $t.function($sym, stringify!($field), field_c_type::<$s, _>(|l| &l.$field));
        )+
    }};
}

/// Checks constants: `PATH` has the value of the C macro or enumerator
/// named like the path's last segment, `PATH => "NAME"` that of `NAME`.
macro_rules! c_constants {
    ($t:ident, $($rust:path $(=> $c:literal)?),+ $(,)?) => {
        $(
            $t.constant(stringify!($rust), $rust, None::<&str> $(.or(Some($c)))?);
        )+
    };
}

/// The C name of each event type; the `match` is exhaustive.
fn fqtype_c_name(e: FEventType) -> &'static str {
    match e {
        FEventType::FlowPkt => "FLOW_PKT",
        FEventType::FlowDown => "FLOW_DOWN",
        FEventType::FlowUp => "FLOW_UP",
        FEventType::FlowAlloc => "FLOW_ALLOC",
        FEventType::FlowDealloc => "FLOW_DEALLOC",
        FEventType::FlowPeer => "FLOW_PEER",
    }
}

/// `(major, minor)` from a soname ending in `.so.MAJOR.MINOR`.
fn soname_version(soname: &str) -> (i128, i128) {
    let v = soname.rsplit(".so.").next().unwrap_or("");
    let mut it = v.split('.').map(|x| x.parse::<i128>().unwrap_or(-1));
    (it.next().unwrap_or(-1), it.next().unwrap_or(-1))
}

/// Everything the binding copies from the C headers.
fn table() -> Table {
    let mut t = Table::default();

    c_struct!(
        t,
        RawQos {
            delay,
            bandwidth,
            availability,
            loss,
            ber,
            in_order,
            max_gap,
            timeout,
        }
    );
    c_struct!(t, RawNameSecPaths { enc, key, crt });
    c_struct!(t, RawNameInfo { name, pol_lb, s, c });
    c_struct!(t, RawIpcpListInfo {
        pid, ipcp_type => "type", name, layer,
    });
    t.cover("FsetT");
    t.cover("FqueueT");
    t.cover("FqType");
    t.item("size of FqType", size_of::<FqType>(), "sizeof(enum fqtype)");
    t.item(
        "size of timespec",
        size_of::<timespec>(),
        "sizeof(struct timespec)",
    );

    c_functions!(t, Lib {
        flow_alloc => "flow_alloc",
        flow_accept => "flow_accept",
        flow_join => "flow_join",
        flow_dealloc => "flow_dealloc",
        flow_write => "flow_write",
        flow_read => "flow_read",
        fccntl => "fccntl",
        fset_create => "fset_create",
        fset_destroy => "fset_destroy",
        fqueue_create => "fqueue_create",
        fqueue_destroy => "fqueue_destroy",
        fset_zero => "fset_zero",
        fset_add => "fset_add",
        fset_has => "fset_has",
        fset_del => "fset_del",
        fqueue_next => "fqueue_next",
        fqueue_type => "fqueue_type",
        fevent => "fevent",
    } irm, _dev, _irm);
    c_functions!(t, IrmFns {
        create_name => "irm_create_name",
        destroy_name => "irm_destroy_name",
        reg_name => "irm_reg_name",
        unreg_name => "irm_unreg_name",
        bind_process => "irm_bind_process",
        unbind_process => "irm_unbind_process",
        list_ipcps => "irm_list_ipcps",
        list_names => "irm_list_names",
    });

    c_constants!(t,
        NAME_SIZE,
        NAME_PATH_SIZE,
        LAYER_NAME_SIZE,
        LB_RR,
        DEFAULT_PEER_TIMEOUT_MS => "DEFAULT_PEER_TIMEOUT",
        FLOWSRCVTIMEO,
        FLOWSSNDTIMEO,
        FLOWGQOSSPEC,
        FLOWSFLAGS,
        FLOWGFLAGS,
        FLOWGRXQLEN,
        FLOWGTXQLEN,
        FRCTSFLAGS,
        FRCTGFLAGS,
        codes::ENOTALLOC,
        codes::EIPCPTYPE,
        codes::EIRMD,
        codes::EIPCP,
        codes::EIPCPSTATE,
        codes::EFLOWDOWN,
        codes::EFLOWPEER,
        codes::ENAME,
        codes::ECRYPT,
        codes::EAUTH,
    );
    for (ident, soname) in [("DEV_SONAME", DEV_SONAME), ("IRM_SONAME", IRM_SONAME)] {
        let (major, minor) = soname_version(soname);
        t.cover(ident);
        t.item(
            format!("major version in {ident} {soname:?}"),
            major,
            "OUROBOROS_VERSION_MAJOR",
        );
        t.item(
            format!("minor version in {ident} {soname:?}"),
            minor,
            "OUROBOROS_VERSION_MINOR",
        );
    }

    t.flags::<FlowProperties>(
        "FlowProperties",
        &[
            ("READ_ONLY", "FLOWFRDONLY"),
            ("WRITE_ONLY", "FLOWFWRONLY"),
            ("READ_WRITE", "FLOWFRDWR"),
            ("DOWN", "FLOWFDOWN"),
            ("NON_BLOCKING_READ", "FLOWFRNOBLOCK"),
            ("NON_BLOCKING_WRITE", "FLOWFWNOBLOCK"),
            ("NON_BLOCKING", "FLOWFNONBLOCK"),
            ("NO_PARTIAL_READ", "FLOWFRNOPART"),
            ("NO_PARTIAL_WRITE", "FLOWFWNOPART"),
        ],
    );
    t.flags::<FrctFlags>(
        "FrctFlags",
        &[
            ("RETRANSMISSION", "FRCTFRTX"),
            ("RESOURCE_CONTROL", "FRCTFRESCNTL"),
            ("LINGER", "FRCTFLINGER"),
        ],
    );

    for e in FEventType::ALL {
        t.item(format!("FEventType::{e:?}"), e as i32, fqtype_c_name(e));
    }

    for (ident, q, c) in [
        ("raw", QoSSpec::raw(), "qos_raw"),
        (
            "raw_no_errors",
            QoSSpec::raw_no_errors(),
            "qos_raw_no_errors",
        ),
        ("best_effort", QoSSpec::best_effort(), "qos_best_effort"),
        ("video", QoSSpec::video(), "qos_video"),
        ("voice", QoSSpec::voice(), "qos_voice"),
        ("data", QoSSpec::data(), "qos_data"),
    ] {
        t.cover(ident);
        let QoSSpec {
            delay,
            bandwidth,
            availability,
            loss,
            ber,
            in_order,
            max_gap,
            timeout,
        } = q;
        for (field, v) in [
            ("delay", i128::from(delay)),
            ("bandwidth", i128::from(bandwidth)),
            ("availability", i128::from(availability)),
            ("loss", i128::from(loss)),
            ("ber", i128::from(ber)),
            ("in_order", i128::from(in_order)),
            ("max_gap", i128::from(max_gap)),
            ("timeout", i128::from(timeout)),
        ] {
            t.item(
                format!("QoSSpec::{ident}().{field}"),
                v,
                format!("{c}.{field}"),
            );
        }
    }
    t
}

/// The headers the C program includes.
const HEADERS: &[&str] = &[
    "ouroboros/dev.h",
    "ouroboros/errno.h",
    "ouroboros/fccntl.h",
    "ouroboros/fqueue.h",
    "ouroboros/irm.h",
    "ouroboros/name.h",
    "ouroboros/qos.h",
    "ouroboros/version.h",
];

fn includes() -> String {
    let mut s = String::from("#include <stddef.h>\n#include <stdio.h>\n#include <time.h>\n");
    for h in HEADERS {
        s.push_str(&format!("#include <{h}>\n"));
    }
    s
}

/// A C program that prints `index value` for every item.
fn c_program(items: &[Item]) -> String {
    let mut s = includes();
    s.push_str(
        "\nstatic void p(int i, int neg, unsigned long long v)\n{\n\
         \tif (neg)\n\t\tprintf(\"%d -%llu\\n\", i, 0ULL - v);\n\
         \telse\n\t\tprintf(\"%d %llu\\n\", i, v);\n}\n\n\
         #define P(i, e) p(i, (e) < 0, (unsigned long long) (e))\n\n\
         int main(void)\n{\n",
    );
    for (i, item) in items.iter().enumerate() {
        s.push_str(&format!("\tP({i}, {});\n", item.c));
    }
    s.push_str("\treturn 0;\n}\n");
    s
}

/// Everything a test may skip for, and the one way to skip: the module
/// the integration tests share (`tests/support/require.rs`).
#[path = "../../../tests/support/require.rs"]
mod require;

/// Skips the check (or fails it, where `CICADA_REQUIRE` demands
/// Ouroboros): the headers or `cc` are missing.
fn skip_or_fail(reason: &str) {
    require::skip(require::Need::Ouroboros, "abi_check", reason);
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `cc` with `args`; `Err` with a reason when `cc` cannot be started.
fn cc(args: &[&std::ffi::OsStr]) -> Result<std::process::Output, String> {
    Command::new("cc")
        .args(args)
        .output()
        .map_err(|e| format!("no C compiler `cc` ({e})"))
}

#[test]
fn binding_matches_the_installed_headers() {
    let t = table();
    assert!(t.errors.is_empty(), "{}", t.errors.join("\n"));

    let dir = std::env::temp_dir().join(format!("cicada-abi-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scratch = Scratch(dir);

    // The headers alone: when they are missing the check cannot run.
    let probe = scratch.0.join("headers.c");
    std::fs::write(&probe, includes()).unwrap();
    let out = match cc(&["-E".as_ref(), probe.as_os_str()]) {
        Ok(o) => o,
        Err(reason) => return skip_or_fail(&reason),
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| l.contains("error")).unwrap_or("");
        return skip_or_fail(&format!(
            "cannot compile against the Ouroboros 0.23 headers ({})",
            first.trim()
        ));
    }

    // The headers are there: from now on every failure is a mismatch.
    let src = scratch.0.join("abi.c");
    let bin = scratch.0.join("abi");
    std::fs::write(&src, c_program(&t.items)).unwrap();
    let out = cc(&[src.as_os_str(), "-o".as_ref(), bin.as_os_str()]).unwrap();
    assert!(
        out.status.success(),
        "the check program does not compile against the installed headers \
         (a name the binding uses is gone?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&bin).output().unwrap();
    assert!(out.status.success(), "the check program failed: {out:?}");

    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut c_values: Vec<Option<i128>> = vec![None; t.items.len()];
    for line in stdout.lines() {
        let (i, v) = line.split_once(' ').expect("an `index value` line");
        let i: usize = i.parse().unwrap();
        c_values[i] = Some(v.parse().unwrap());
    }
    let mut mismatches = Vec::new();
    for (item, c) in t.items.iter().zip(&c_values) {
        match c {
            Some(c) if *c == item.rust => {}
            Some(_) if item.prototype => mismatches.push(format!(
                "{}: the Rust declaration is not compatible with the installed one (`{}` is false)",
                item.label, item.c
            )),
            Some(c) => mismatches.push(format!(
                "{}: Rust has {}, the installed headers have {c} (`{}`)",
                item.label, item.rust, item.c
            )),
            None => mismatches.push(format!("{}: no value printed", item.label)),
        }
    }
    assert!(
        mismatches.is_empty(),
        "the binding differs from the installed Ouroboros headers:\n{}",
        mismatches.join("\n")
    );
}

/// The `const` items (constants, `const fn` presets, bitflags) and the
/// `#[repr(C)]` structs declared in `text`, before its test module.
fn declarations(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let code = line.split("//").next().unwrap_or("").trim();
        if code == "mod tests {" {
            break;
        }
        if code == "#[repr(C)]" || code == "#[repr(transparent)]" {
            let decl = lines[n + 1..]
                .iter()
                .map(|l| l.trim())
                .find(|l| !l.starts_with("#[") && !l.starts_with("///"))
                .unwrap_or("");
            if let Some(rest) = decl.split("struct ").nth(1) {
                found.push(ident(rest));
            }
        }
        let words: Vec<&str> = code.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            if *w != "const" {
                continue;
            }
            let next = match words.get(i + 1) {
                Some(&"fn") => words.get(i + 2),
                other => other,
            };
            if let Some(name) = next.map(|s| ident(s)) {
                if !name.is_empty() && name != "_" {
                    found.push(name);
                }
            }
        }
    }
    found
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("ffi/abi_check.rs") {
            out.push(p);
        }
    }
}

/// `(field, symbol)` of every `field: sym(&lib, b"symbol\0")` in `text`.
fn loaded_symbols(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let (field, rest) = l.trim().split_once(": sym(")?;
            let sym = rest.split("b\"").nth(1)?.split("\\0").next()?;
            Some((field.trim().to_owned(), sym.to_owned()))
        })
        .collect()
}

#[test]
fn every_declaration_is_in_the_table() {
    let t = table();
    assert!(t.errors.is_empty(), "{}", t.errors.join("\n"));
    let mut files = Vec::new();
    rust_sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut missing = Vec::new();
    let mut loads = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for name in declarations(&text) {
            let known = t.covered.contains(&name) || NOT_IN_HEADERS.iter().any(|(n, _)| *n == name);
            if !known {
                missing.push(format!("{name} ({})", f.display()));
            }
        }
        loads.extend(loaded_symbols(&text));
    }
    assert!(
        missing.is_empty(),
        "declared but neither checked against the headers nor listed in \
         NOT_IN_HEADERS (ouroboros/src/ffi/abi_check.rs):\n{}",
        missing.join("\n")
    );
    for (field, sym) in &loads {
        assert!(
            t.symbols.contains(&(field.clone(), sym.clone())),
            "{field} is loaded from symbol {sym}, which the table does not check"
        );
    }
    for (field, sym) in &t.symbols {
        assert!(
            loads.contains(&(field.clone(), sym.clone())),
            "the table checks {sym} for {field}, but the binding does not load it so"
        );
    }
}
