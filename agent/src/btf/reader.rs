//! A reader of just what ward asks of BTF: the byte offset of a struct
//! member (through nested and anonymous members) and the position of a
//! function's parameter.
//!
//! btfparse answers the same questions, and the tests compare the two on
//! the running kernel, but it builds an owned copy of every one of the
//! kernel's ~100,000 types first: 2.5 s of every agent start in the
//! emulated test VMs. This reader indexes types by position in one pass
//! and decodes only the few it is asked about.

use std::collections::HashMap;

use super::BtfError;

const MAGIC: u16 = 0xeb9f;
/// `struct btf_type`: name_off, info, size_or_type.
const TYPE_LEN: usize = 12;
/// Resolving a type never follows more links than this (a loop in a bad
/// file must not hang the agent).
const MAX_DEPTH: usize = 32;

const KIND_INT: u32 = 1;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_TYPE_TAG: u32 = 18;

/// Bytes that follow a type's header, by kind (`<linux/btf.h>`).
fn extra_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
        3 => 12,                      // ARRAY
        4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
        6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
        2 | 7..=12 | 16 | 18 => 0,    // PTR, FWD, TYPEDEF, VOLATILE,
        // CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        _ => return None,
    })
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The NUL-terminated string at `off` of the string section.
fn c_string(strings: &[u8], off: u32) -> &[u8] {
    let tail = strings.get(off as usize..).unwrap_or_default();
    &tail[..tail.iter().position(|&b| b == 0).unwrap_or(tail.len())]
}

fn parse_err(what: &str) -> BtfError {
    BtfError::Parse(what.to_owned())
}

/// One type, as it lies in the type section.
struct Type<'a> {
    kind: u32,
    kind_flag: bool,
    vlen: usize,
    size_or_type: u32,
    /// The members, parameters or other kind-specific data.
    extra: &'a [u8],
}

/// Where a member was found: its bit offset from the start of the
/// outermost struct, its type, and its bitfield size (0 if none).
struct Member {
    bit_offset: u32,
    ty: u32,
    bitfield: u32,
}

pub struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Type id -> the offset of its header in `types` (id 0 is void).
    at: Vec<u32>,
    /// Names of structs and unions -> their ids.
    composites: HashMap<&'a [u8], u32>,
    /// Names of functions -> their ids.
    funcs: HashMap<&'a [u8], u32>,
}

impl<'a> Btf<'a> {
    /// Indexes a little-endian BTF blob (`/sys/kernel/btf/vmlinux`).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BtfError> {
        if u16_at(bytes, 0) != Some(MAGIC) {
            return Err(parse_err("not little-endian BTF (bad magic)"));
        }
        let header = |at| u32_at(bytes, at).map(|v| v as usize);
        let (Some(hdr_len), Some(type_off), Some(type_len), Some(str_off), Some(str_len)) =
            (header(4), header(8), header(12), header(16), header(20))
        else {
            return Err(parse_err("truncated header"));
        };
        let section = |off: usize, len: usize, what: &str| {
            hdr_len
                .checked_add(off)
                .and_then(|start| bytes.get(start..start.checked_add(len)?))
                .ok_or_else(|| parse_err(&format!("{what} section lies past the end of the data")))
        };
        let types = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?;
        let mut btf = Btf {
            types,
            strings,
            at: vec![0],
            composites: HashMap::new(),
            funcs: HashMap::new(),
        };
        let mut pos = 0;
        while pos < types.len() {
            let (Some(name), Some(info)) = (u32_at(types, pos), u32_at(types, pos + 4)) else {
                return Err(parse_err("truncated type"));
            };
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let extra = extra_len(kind, vlen)
                .ok_or_else(|| parse_err(&format!("unknown type kind {kind}")))?;
            let id = btf.at.len() as u32;
            btf.at.push(pos as u32);
            let names = match kind {
                KIND_STRUCT | KIND_UNION => Some(&mut btf.composites),
                KIND_FUNC => Some(&mut btf.funcs),
                _ => None,
            };
            if let (Some(names), true) = (names, name != 0) {
                names.entry(c_string(strings, name)).or_insert(id);
            }
            pos += TYPE_LEN + extra;
        }
        if pos != types.len() {
            return Err(parse_err("truncated type"));
        }
        Ok(btf)
    }

    /// Whether a function of this name exists.
    pub fn has_func(&self, name: &str) -> bool {
        self.funcs.contains_key(name.as_bytes())
    }

    fn string(&self, off: u32) -> &'a [u8] {
        c_string(self.strings, off)
    }

    fn ty(&self, id: u32) -> Option<Type<'a>> {
        if id == 0 {
            return None; // void
        }
        let pos = *self.at.get(id as usize)? as usize;
        let info = u32_at(self.types, pos + 4)?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let start = pos + TYPE_LEN;
        Some(Type {
            kind,
            kind_flag: info >> 31 == 1,
            vlen,
            size_or_type: u32_at(self.types, pos + 8)?,
            extra: self.types.get(start..start + extra_len(kind, vlen)?)?,
        })
    }

    /// `id` with typedefs and qualifiers taken off.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..MAX_DEPTH {
            match self.ty(id) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    /// Member `name` of struct or union `id`, looking inside anonymous
    /// members as C does.
    fn member(&self, id: u32, name: &[u8], depth: usize) -> Option<Member> {
        let t = self.ty(id)?;
        if !matches!(t.kind, KIND_STRUCT | KIND_UNION) || depth > MAX_DEPTH {
            return None;
        }
        (0..t.vlen).find_map(|i| {
            let m = i * 12;
            let (name_off, ty, off) = (
                u32_at(t.extra, m)?,
                u32_at(t.extra, m + 4)?,
                u32_at(t.extra, m + 8)?,
            );
            let (bit_offset, bitfield) = if t.kind_flag {
                (off & 0xff_ffff, off >> 24)
            } else {
                (off, 0)
            };
            if name_off == 0 {
                let inner = self.member(self.resolve(ty), name, depth + 1)?;
                Some(Member {
                    bit_offset: bit_offset + inner.bit_offset,
                    ..inner
                })
            } else if self.string(name_off) == name {
                Some(Member {
                    bit_offset,
                    ty,
                    bitfield,
                })
            } else {
                None
            }
        })
    }

    /// Whether an int type is narrower than its storage (a bitfield in a
    /// struct that does not say so in its members).
    fn narrow_int(&self, id: u32) -> bool {
        match self.ty(self.resolve(id)) {
            Some(t) if t.kind == KIND_INT => {
                let bits = u32_at(t.extra, 0).map_or(0, |e| e & 0xff);
                bits != t.size_or_type * 8
            }
            _ => false,
        }
    }

    /// `offsetof(struct ty, field)`, where `field` may be a dotted path
    /// through nested structs (`d_name.name`).
    pub fn byte_offset(&self, ty: &'static str, field: &'static str) -> Result<u64, BtfError> {
        let mut id = *self
            .composites
            .get(ty.as_bytes())
            .ok_or(BtfError::MissingType(ty))?;
        let missing = |reason: &str| BtfError::MissingField {
            ty,
            field,
            reason: reason.to_owned(),
        };
        let mut bits = 0u64;
        let mut last = None;
        for part in field.split('.') {
            let m = self
                .member(self.resolve(id), part.as_bytes(), 0)
                .ok_or_else(|| missing(&format!("no member `{part}`")))?;
            bits += u64::from(m.bit_offset);
            id = m.ty;
            last = Some(m);
        }
        let m = last.ok_or_else(|| missing("empty field name"))?;
        if m.bitfield != 0 || !bits.is_multiple_of(8) || self.narrow_int(m.ty) {
            return Err(BtfError::Bitfield { ty, field });
        }
        Ok(bits / 8)
    }

    /// The position of parameter `param` of function `func`.
    pub fn param_index(&self, func: &'static str, param: &'static str) -> Result<u64, BtfError> {
        let missing = |reason: &str| BtfError::MissingField {
            ty: func,
            field: param,
            reason: reason.to_owned(),
        };
        let id = *self
            .funcs
            .get(func.as_bytes())
            .ok_or(BtfError::MissingType(func))?;
        let f = self.ty(id).filter(|t| t.kind == KIND_FUNC);
        let proto = f
            .and_then(|f| self.ty(f.size_or_type))
            .filter(|p| p.kind == KIND_FUNC_PROTO)
            .ok_or_else(|| missing("not a function with a prototype"))?;
        (0..proto.vlen)
            .position(|i| {
                u32_at(proto.extra, i * 8).is_some_and(|n| self.string(n) == param.as_bytes())
            })
            .map(|i| i as u64)
            .ok_or_else(|| missing("no such parameter"))
    }
}
