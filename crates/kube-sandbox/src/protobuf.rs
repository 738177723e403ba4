//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`).
//!
//! kubectl's generators (`kubectl create namespace`, `kubectl create service ...`) send their
//! objects as protobuf: the magic `k8s\0`, then a `runtime.Unknown` { typeMeta = 1 { apiVersion
//! = 1, kind = 2 }, raw = 2 (the object's own protobuf), contentEncoding = 3, contentType = 4 }.
//! This module turns such a body into the JSON object the JSON path would have received, using
//! hand-written field tables for the few `k8s.io/api/core/v1` messages generators create. Fields
//! the tables do not know (of any wire type) are skipped, as are `ownerReferences` and
//! `managedFields`, which generators never set. Malformed input is a 400, never a panic.

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::util;

pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";
/// Nesting limit for (unknown) groups; the field tables themselves nest only a few levels.
const MAX_DEPTH: u32 = 64;

/// Decodes a protobuf request body into a JSON object with `apiVersion` and `kind` set.
pub fn decode_object(body: &[u8]) -> ApiResult<Value> {
    let bad = |e: String| ApiError::bad_request(format!("unable to decode protobuf body: {e}"));
    let payload = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("the body does not start with the k8s\\0 magic".into()))?;
    let Envelope {
        api_version,
        kind,
        raw,
        content_encoding: encoding,
        content_type: inner_type,
    } = decode_envelope(payload).map_err(bad)?;
    if !encoding.is_empty() {
        return Err(unsupported(format!(
            "protobuf bodies with contentEncoding {encoding:?} are not supported"
        )));
    }
    if !inner_type.is_empty() && inner_type != MEDIA_TYPE {
        return Err(unsupported(format!(
            "protobuf envelopes with contentType {inner_type:?} are not supported"
        )));
    }
    if kind.is_empty() {
        return Err(ApiError::bad_request(
            "Object 'Kind' is missing in the protobuf body",
        ));
    }
    let schema = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "Service") => SERVICE,
        _ => {
            return Err(unsupported(format!(
                "kube-sandbox cannot decode protobuf bodies of type {api_version:?}, Kind={kind:?} \
                 (only v1 Namespace and v1 Service); send application/json instead"
            )));
        }
    };
    let mut obj = decode_message(raw, schema, 0).map_err(bad)?;
    obj.insert("apiVersion".into(), Value::String(api_version));
    obj.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(obj))
}

/// The fields of a `runtime.Unknown`.
#[derive(Default)]
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
    content_type: String,
}

fn decode_envelope(buf: &[u8]) -> Result<Envelope<'_>, String> {
    let mut env = Envelope::default();
    let mut r = Reader::new(buf);
    while let Some((num, wire)) = r.next_field(0)? {
        let field = match num {
            1..=4 => &UNKNOWN[num as usize - 1],
            _ => continue,
        };
        let Wire::Len(b) = wire else {
            return Err(wrong_wire(field, &wire));
        };
        match num {
            1 => {
                let tm = decode_message(b, TYPE_META, 1)?;
                let text = |k: &str| tm.get(k).and_then(Value::as_str).unwrap_or_default();
                env.api_version = text("apiVersion").to_string();
                env.kind = text("kind").to_string();
            }
            2 => env.raw = b,
            3 => env.content_encoding = utf8(field, b)?,
            _ => env.content_type = utf8(field, b)?,
        }
    }
    Ok(env)
}

fn utf8(field: &Field, b: &[u8]) -> Result<String, String> {
    std::str::from_utf8(b)
        .map(str::to_string)
        .map_err(|_| format!("field {} ({}) is not valid UTF-8", field.num, field.name))
}

fn unsupported(message: String) -> ApiError {
    ApiError::new(415, "UnsupportedMediaType", message)
}

// ---------------------------------------------------------------------------------------------
// Field tables. Numbers follow k8s.io/api/core/v1/generated.proto and
// k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto.

#[derive(Clone, Copy)]
enum Ty {
    Str,
    /// Raw bytes (only `Unknown.raw`, which `decode_envelope` handles itself).
    Bytes,
    I32,
    I64,
    Bool,
    Msg(&'static [Field]),
    /// `map<string, string>`: repeated entries { key = 1, value = 2 }.
    StrMap,
    /// `intstr.IntOrString` { type = 1, intVal = 2, strVal = 3 }.
    IntOrStr,
    /// `meta.v1.Time` { seconds = 1, nanos = 2 }; the zero time is omitted.
    Time,
}

#[derive(Clone, Copy)]
struct Field {
    num: u32,
    name: &'static str,
    ty: Ty,
    repeated: bool,
    /// Go non-pointer `omitempty` fields: gogo-protobuf always writes them, JSON omits zeros.
    omit_zero: bool,
}

/// A plain (non-pointer, `omitempty`) field.
const fn f(num: u32, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: false,
        omit_zero: true,
    }
}

/// A pointer field (or one without `omitempty`): present on the wire means set, even if zero.
const fn ptr(num: u32, name: &'static str, ty: Ty) -> Field {
    Field {
        omit_zero: false,
        ..f(num, name, ty)
    }
}

const fn rep(num: u32, name: &'static str, ty: Ty) -> Field {
    Field {
        repeated: true,
        ..f(num, name, ty)
    }
}

const UNKNOWN: &[Field] = &[
    f(1, "typeMeta", Ty::Msg(TYPE_META)),
    f(2, "raw", Ty::Bytes),
    f(3, "contentEncoding", Ty::Str),
    f(4, "contentType", Ty::Str),
];

const TYPE_META: &[Field] = &[f(1, "apiVersion", Ty::Str), f(2, "kind", Ty::Str)];

const OBJECT_META: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "generateName", Ty::Str),
    f(3, "namespace", Ty::Str),
    f(4, "selfLink", Ty::Str),
    f(5, "uid", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "generation", Ty::I64),
    f(8, "creationTimestamp", Ty::Time),
    f(9, "deletionTimestamp", Ty::Time),
    ptr(10, "deletionGracePeriodSeconds", Ty::I64),
    f(11, "labels", Ty::StrMap),
    f(12, "annotations", Ty::StrMap),
    rep(14, "finalizers", Ty::Str),
];

const NAMESPACE: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(&[rep(1, "finalizers", Ty::Str)])),
    f(3, "status", Ty::Msg(&[f(1, "phase", Ty::Str)])),
];

const SERVICE: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(SERVICE_SPEC)),
    // ServiceStatus { loadBalancer = 1 LoadBalancerStatus { ingress = 1 }, conditions = 2 }
    f(3, "status", Ty::Msg(&[f(1, "loadBalancer", Ty::Msg(&[]))])),
];

const SERVICE_SPEC: &[Field] = &[
    rep(1, "ports", Ty::Msg(SERVICE_PORT)),
    f(2, "selector", Ty::StrMap),
    f(3, "clusterIP", Ty::Str),
    f(4, "type", Ty::Str),
    rep(5, "externalIPs", Ty::Str),
    f(7, "sessionAffinity", Ty::Str),
    f(8, "loadBalancerIP", Ty::Str),
    rep(9, "loadBalancerSourceRanges", Ty::Str),
    f(10, "externalName", Ty::Str),
    f(11, "externalTrafficPolicy", Ty::Str),
    f(12, "healthCheckNodePort", Ty::I32),
    f(13, "publishNotReadyAddresses", Ty::Bool),
    // SessionAffinityConfig { clientIP = 1 ClientIPConfig { timeoutSeconds = 1 } }
    ptr(
        14,
        "sessionAffinityConfig",
        Ty::Msg(&[ptr(
            1,
            "clientIP",
            Ty::Msg(&[ptr(1, "timeoutSeconds", Ty::I32)]),
        )]),
    ),
    ptr(17, "ipFamilyPolicy", Ty::Str),
    rep(18, "clusterIPs", Ty::Str),
    rep(19, "ipFamilies", Ty::Str),
    ptr(20, "allocateLoadBalancerNodePorts", Ty::Bool),
    ptr(21, "loadBalancerClass", Ty::Str),
    ptr(22, "internalTrafficPolicy", Ty::Str),
];

const SERVICE_PORT: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "protocol", Ty::Str),
    ptr(3, "port", Ty::I32),
    // A zero targetPort is defaulted to `port` by the apiserver, like an absent one.
    f(4, "targetPort", Ty::IntOrStr),
    f(5, "nodePort", Ty::I32),
    ptr(6, "appProtocol", Ty::Str),
];

const INT_OR_STRING: &[Field] = &[
    ptr(1, "type", Ty::I64),
    ptr(2, "intVal", Ty::I32),
    ptr(3, "strVal", Ty::Str),
];

const TIME: &[Field] = &[ptr(1, "seconds", Ty::I64), ptr(2, "nanos", Ty::I32)];

const MAP_ENTRY: &[Field] = &[ptr(1, "key", Ty::Str), ptr(2, "value", Ty::Str)];

// ---------------------------------------------------------------------------------------------
// Wire format.

enum Wire<'a> {
    Varint(u64),
    Fixed64,
    Len(&'a [u8]),
    Fixed32,
    Group,
}

impl Wire<'_> {
    fn name(&self) -> &'static str {
        match self {
            Wire::Varint(_) => "varint",
            Wire::Fixed64 => "fixed64",
            Wire::Len(_) => "length-delimited",
            Wire::Fixed32 => "fixed32",
            Wire::Group => "group",
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err("varint overflows 64 bits".into());
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint overflows 64 bits".into())
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&end| end <= self.buf.len())
            .ok_or("truncated field")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Reads one key; returns the field number and wire type.
    fn key(&mut self) -> Result<(u32, u8), String> {
        let key = self.varint()?;
        let num = u32::try_from(key >> 3)
            .ok()
            .filter(|n| (1..=(1 << 29) - 1).contains(n))
            .ok_or_else(|| format!("invalid field number {}", key >> 3))?;
        Ok((num, (key & 7) as u8))
    }

    /// The next field, or None at the end of the buffer. Groups are skipped entirely.
    fn next_field(&mut self, depth: u32) -> Result<Option<(u32, Wire<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let (num, wt) = self.key()?;
        let wire = self.value(num, wt, depth)?;
        Ok(Some((num, wire)))
    }

    fn value(&mut self, num: u32, wt: u8, depth: u32) -> Result<Wire<'a>, String> {
        Ok(match wt {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed64
            }
            2 => {
                let n = self.varint()?;
                Wire::Len(self.take(n)?)
            }
            3 => {
                self.skip_group(num, depth + 1)?;
                Wire::Group
            }
            4 => return Err(format!("unexpected end-group for field {num}")),
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            w => return Err(format!("invalid wire type {w} for field {num}")),
        })
    }

    fn skip_group(&mut self, group: u32, depth: u32) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("groups nested too deeply".into());
        }
        loop {
            if self.pos >= self.buf.len() {
                return Err(format!("truncated group {group}"));
            }
            let (num, wt) = self.key()?;
            if wt == 4 {
                return if num == group {
                    Ok(())
                } else {
                    Err(format!("end-group {num} does not match group {group}"))
                };
            }
            self.value(num, wt, depth)?;
        }
    }
}

fn decode_message(buf: &[u8], fields: &[Field], depth: u32) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    let mut r = Reader::new(buf);
    while let Some((num, wire)) = r.next_field(depth)? {
        let Some(field) = fields.iter().find(|f| f.num == num) else {
            continue; // unknown field: already skipped
        };
        if let Ty::StrMap = field.ty {
            let Wire::Len(entry) = wire else {
                return Err(wrong_wire(field, &wire));
            };
            let e = decode_message(entry, MAP_ENTRY, depth + 1)?;
            let key = e
                .get("key")
                .cloned()
                .unwrap_or(Value::String(String::new()));
            let value = e
                .get("value")
                .cloned()
                .unwrap_or(Value::String(String::new()));
            let Value::String(key) = key else {
                unreachable!("map keys decode as strings")
            };
            let map = out
                .entry(field.name)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = map {
                m.insert(key, value);
            }
            continue;
        }
        let value = decode_value(field, wire, depth)?;
        if field.repeated {
            let list = out
                .entry(field.name)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(l) = list {
                l.push(value);
            }
        } else if (field.omit_zero && is_zero(&value)) || value.is_null() {
            out.remove(field.name);
        } else {
            out.insert(field.name.into(), value);
        }
    }
    Ok(out)
}

fn wrong_wire(field: &Field, wire: &Wire) -> String {
    format!(
        "field {} ({}) has unexpected wire type {}",
        field.num,
        field.name,
        wire.name()
    )
}

fn decode_value(field: &Field, wire: Wire, depth: u32) -> Result<Value, String> {
    let wrong = |w: &Wire| wrong_wire(field, w);
    Ok(match (field.ty, wire) {
        (Ty::Str, Wire::Len(b)) => Value::String(utf8(field, b)?),
        (Ty::I32, Wire::Varint(v)) => {
            // int32 negatives are sign-extended to 64 bits on the wire.
            let v = i32::try_from(v as i64)
                .map_err(|_| format!("field {} ({}) overflows int32", field.num, field.name))?;
            Value::from(v)
        }
        (Ty::I64, Wire::Varint(v)) => Value::from(v as i64),
        (Ty::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
        (Ty::Msg(fields), Wire::Len(b)) => {
            if depth >= MAX_DEPTH {
                return Err("messages nested too deeply".into());
            }
            Value::Object(decode_message(b, fields, depth + 1)?)
        }
        (Ty::IntOrStr, Wire::Len(b)) => {
            let m = decode_message(b, INT_OR_STRING, depth + 1)?;
            if m.get("type").and_then(Value::as_i64) == Some(1) {
                m.get("strVal")
                    .cloned()
                    .unwrap_or(Value::String(String::new()))
            } else {
                m.get("intVal").cloned().unwrap_or(Value::from(0))
            }
        }
        (Ty::Time, Wire::Len(b)) => {
            let m = decode_message(b, TIME, depth + 1)?;
            let secs = m.get("seconds").and_then(Value::as_i64).unwrap_or(0);
            let nanos = m.get("nanos").and_then(Value::as_i64).unwrap_or(0);
            if secs == 0 && nanos == 0 {
                Value::Null
            } else {
                let secs = u64::try_from(secs).map_err(|_| {
                    format!(
                        "field {} ({}): timestamps before 1970 are not supported",
                        field.num, field.name
                    )
                })?;
                Value::String(util::format_rfc3339(secs))
            }
        }
        (_, w) => return Err(wrong(&w)),
    })
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::String(s) => s.is_empty(),
        Value::Array(_) | Value::Object(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A tiny encoder for building test bodies.
    fn key(num: u32, wt: u8, out: &mut Vec<u8>) {
        varint(u64::from(num) << 3 | u64::from(wt), out);
    }
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn bytes(num: u32, b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        key(num, 2, &mut out);
        varint(b.len() as u64, &mut out);
        out.extend_from_slice(b);
        out
    }
    fn string(num: u32, s: &str) -> Vec<u8> {
        bytes(num, s.as_bytes())
    }
    fn int(num: u32, v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        key(num, 0, &mut out);
        varint(v as u64, &mut out);
        out
    }
    fn map_entry(num: u32, k: &str, v: &str) -> Vec<u8> {
        bytes(num, &[string(1, k), string(2, v)].concat())
    }
    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [string(1, api_version), string(2, kind)].concat();
        [
            MAGIC.to_vec(),
            bytes(1, &type_meta),
            bytes(2, raw),
            string(3, ""),
            string(4, ""),
        ]
        .concat()
    }
    /// ObjectMeta the way gogo-protobuf writes it: every non-pointer field, zero or not.
    fn meta(name: &str, labels: &[(&str, &str)]) -> Vec<u8> {
        let mut m = [
            string(1, name),
            string(2, ""),
            string(3, ""),
            string(4, ""),
            string(5, ""),
            string(6, ""),
            int(7, 0),
            bytes(8, &[]),
        ]
        .concat();
        for (k, v) in labels {
            m.extend(map_entry(11, k, v));
        }
        m
    }

    #[test]
    fn namespace() {
        let raw = [
            bytes(1, &meta("foo", &[("team", "a")])),
            bytes(2, &[]),
            bytes(3, &string(1, "")),
        ]
        .concat();
        let v = decode_object(&envelope("v1", "Namespace", &raw)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "foo", "labels": {"team": "a"}}, "spec": {}, "status": {}})
        );
    }

    #[test]
    fn service_with_unknown_fields_of_every_wire_type() {
        let port = |name: &str, p: i64, target: &[u8], node: i64| {
            [
                string(1, name),
                string(2, "TCP"),
                int(3, p),
                bytes(4, target),
                int(5, node),
            ]
            .concat()
        };
        let target_int = [int(1, 0), int(2, 8080), string(3, "")].concat();
        let target_str = [int(1, 1), int(2, 0), string(3, "http")].concat();
        let mut unknown = Vec::new();
        key(99, 0, &mut unknown);
        varint(u64::MAX, &mut unknown);
        key(98, 1, &mut unknown);
        unknown.extend([0; 8]);
        unknown.extend(bytes(97, b"\xff\xfe not utf-8"));
        key(96, 3, &mut unknown); // group with a nested group inside
        unknown.extend(int(1, 5));
        key(2, 3, &mut unknown);
        key(2, 4, &mut unknown);
        key(96, 4, &mut unknown);
        key(95, 5, &mut unknown);
        unknown.extend([1, 2, 3, 4]);
        let spec = [
            bytes(1, &port("a", 80, &target_int, 0)),
            unknown.clone(),
            bytes(1, &port("b", 443, &target_str, 30001)),
            map_entry(2, "app", "web"),
            string(3, ""),
            string(4, "NodePort"),
            string(7, ""),
            int(12, 0),
            int(13, 0),
            int(20, 0), // pointer bool set to false: kept
        ]
        .concat();
        let raw = [bytes(1, &meta("web", &[])), unknown, bytes(2, &spec)].concat();
        let v = decode_object(&envelope("v1", "Service", &raw)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                   "spec": {"ports": [
                       {"name": "a", "protocol": "TCP", "port": 80, "targetPort": 8080},
                       {"name": "b", "protocol": "TCP", "port": 443, "targetPort": "http",
                        "nodePort": 30001}],
                     "selector": {"app": "web"}, "type": "NodePort",
                     "allocateLoadBalancerNodePorts": false}})
        );
    }

    #[test]
    fn negative_int32_and_timestamps() {
        let raw = bytes(
            1,
            &[string(1, "x"), bytes(8, &int(1, 1_700_000_000)), int(7, -1)].concat(),
        );
        let v = decode_object(&envelope("v1", "Namespace", &raw)).unwrap();
        assert_eq!(v["metadata"]["creationTimestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(v["metadata"]["generation"], -1);
        let port = [int(3, -5)].concat();
        let raw = bytes(2, &bytes(1, &port));
        let v = decode_object(&envelope("v1", "Service", &raw)).unwrap();
        assert_eq!(v["spec"]["ports"][0]["port"], -5);
    }

    #[test]
    fn unsupported_kinds_are_415() {
        let e = decode_object(&envelope("v1", "Pod", &[])).unwrap_err();
        assert_eq!(e.code, 415);
        assert!(e.message.contains("Pod"), "{}", e.message);
        let e = decode_object(&envelope("apps/v1", "Deployment", &[])).unwrap_err();
        assert!(e.code == 415 && e.message.contains("Deployment"));
        let mut body = envelope("v1", "Namespace", &[]);
        body.extend(string(3, "gzip"));
        assert_eq!(decode_object(&body).unwrap_err().code, 415);
    }

    #[test]
    fn malformed_input_is_400_not_a_panic() {
        let raw = [
            bytes(1, &meta("foo", &[("a", "b")])),
            bytes(2, &string(1, "kubernetes")),
        ]
        .concat();
        let good = envelope("v1", "Namespace", &raw);
        assert!(decode_object(&good).is_ok());
        // Every truncation of a valid body fails cleanly.
        for n in 0..good.len() {
            if let Err(e) = decode_object(&good[..n]) {
                assert_eq!(e.code, 400, "prefix {n}: {}", e.message);
            }
        }
        // Every single-byte corruption decodes or fails cleanly.
        for i in 0..good.len() {
            for b in [0x00, 0x07, 0x80, 0xff] {
                let mut c = good.clone();
                c[i] = b;
                if let Err(e) = decode_object(&c) {
                    assert!(matches!(e.code, 400 | 415), "{}", e.message);
                }
            }
        }
        let cases: &[&[u8]] = &[
            b"",
            b"k8s",
            b"{\"kind\":\"Namespace\"}",
            b"k8s\0",                                             // no kind
            b"k8s\0\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", // huge length
            b"k8s\0\x0a",                                         // truncated length
            b"k8s\0\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", // overlong varint
            b"k8s\0\x0f",                                         // wire type 7
            b"k8s\0\x0c",                                         // stray end-group
            b"k8s\0\x0b\x14",                                     // mismatched end-group
            b"k8s\0\x0b",                                         // unterminated group
            b"k8s\0\x08\x01",                                     // typeMeta as a varint
            b"k8s\0\x00",                                         // field number 0
        ];
        for c in cases {
            let e = decode_object(c).unwrap_err();
            assert_eq!(e.code, 400, "{c:?}: {}", e.message);
        }
        let mut deep = b"k8s\0".to_vec();
        deep.extend([0x2b; 10_000]); // start group 5, nested 10000 times
        assert_eq!(decode_object(&deep).unwrap_err().code, 400);
        // A known string field with invalid UTF-8.
        let raw = bytes(1, &bytes(1, b"\xff"));
        let e = decode_object(&envelope("v1", "Namespace", &raw)).unwrap_err();
        assert_eq!(e.code, 400);
    }
}
