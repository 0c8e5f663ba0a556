//! JSON Schema to Gemini's Schema subset, for function declarations and `responseSchema`.

use serde_json::{Map, Value, json};

/// The fields of Gemini's `Schema` (a subset of OpenAPI 3.0). The API answers 400 "Unknown
/// name" for any other field, so after translation everything else is dropped:
/// `additionalProperties`, `$schema`, `$id`, `$defs`/`definitions`, `strict`, `examples`,
/// `not`, `patternProperties`, `exclusiveMinimum`, ...
const SCHEMA_FIELDS: &[&str] = &[
    "anyOf",
    "default",
    "description",
    "enum",
    "example",
    "format",
    "items",
    "maxItems",
    "maxLength",
    "maxProperties",
    "maximum",
    "minItems",
    "minLength",
    "minProperties",
    "minimum",
    "nullable",
    "pattern",
    "properties",
    "propertyOrdering",
    "required",
    "title",
    "type",
];

/// A JSON Schema as a Gemini Schema. Translated rather than dropped: local `$ref`s are
/// inlined (a recursive one becomes `{}`), `allOf` is merged, `oneOf` becomes `anyOf`, `const`
/// a one-value `enum`, `type: [T, "null"]` and `anyOf` with a null member `nullable: true`,
/// and types are upper-cased. Then what Gemini would reject goes: non-string `enum`s, formats
/// other than enum/date-time (strings) and float/double/int32/int64 (numbers), `required`
/// names that are not properties, and empty `properties`.
pub(super) fn clean_schema(schema: &Value) -> Map<String, Value> {
    clean_node(schema, schema, &mut Vec::new())
}

fn clean_node(node: &Value, root: &Value, refs: &mut Vec<String>) -> Map<String, Value> {
    // `true`/`false` schemas and anything else that is not an object: no constraint.
    let Some(source) = node.as_object() else { return Map::new() };
    let mut out = Map::new();
    if let Some(reference) = source.get("$ref").and_then(Value::as_str) {
        out = resolve_ref(reference, root, refs);
    }
    for member in source.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        let member = clean_node(member, root, refs);
        merge_schema(&mut out, member);
    }
    let own = own_fields(source, root, refs);
    merge_schema(&mut out, own);
    normalise(&mut out);
    out
}

/// Local references only (`#/$defs/X`, `#/definitions/X`, any JSON pointer into the root).
fn resolve_ref(reference: &str, root: &Value, refs: &mut Vec<String>) -> Map<String, Value> {
    let target = reference.strip_prefix('#').and_then(|pointer| root.pointer(pointer));
    let Some(target) = target.filter(|_| !refs.iter().any(|r| r == reference)) else { return Map::new() };
    refs.push(reference.to_string());
    let out = clean_node(target, root, refs);
    refs.pop();
    out
}

/// The node's own fields, translated; sub-schemas cleaned recursively.
fn own_fields(source: &Map<String, Value>, root: &Value, refs: &mut Vec<String>) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in source {
        match key.as_str() {
            "type" => put_type(&mut out, value),
            "properties" => {
                let properties = value.as_object().into_iter().flatten();
                let cleaned =
                    properties.map(|(name, schema)| (name.clone(), Value::Object(clean_node(schema, root, refs))));
                out.insert("properties".into(), Value::Object(cleaned.collect()));
            }
            // A tuple-style `items` array keeps its first schema.
            "items" => {
                let items = value.as_array().and_then(|a| a.first()).unwrap_or(value);
                out.insert("items".into(), Value::Object(clean_node(items, root, refs)));
            }
            "anyOf" | "oneOf" => {
                let members = value.as_array().into_iter().flatten();
                let cleaned: Vec<Value> = members.map(|m| Value::Object(clean_node(m, root, refs))).collect();
                out.insert("anyOf".into(), Value::Array(cleaned));
            }
            "const" => _ = out.insert("enum".into(), json!([value])),
            _ if SCHEMA_FIELDS.contains(&key.as_str()) => _ = out.insert(key.clone(), value.clone()),
            _ => {}
        }
    }
    out
}

/// `"string"` -> `"STRING"`; `["string", "null"]` -> `"STRING"` plus `nullable`; several
/// non-null types -> `anyOf` of each.
fn put_type(out: &mut Map<String, Value>, value: &Value) {
    let names: Vec<&str> = match value {
        Value::String(name) => vec![name],
        Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
        _ => return,
    };
    if names.contains(&"null") {
        out.insert("nullable".into(), Value::Bool(true));
    }
    let types: Vec<String> = names.iter().filter(|n| **n != "null").map(|n| n.to_ascii_uppercase()).collect();
    match types.as_slice() {
        [] => {}
        [one] => _ = out.insert("type".into(), json!(one)),
        many => _ = out.insert("anyOf".into(), many.iter().map(|t| json!({"type": t})).collect()),
    }
}

/// `over` onto `base`: `over`'s fields win, except that properties and required names add up.
fn merge_schema(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (key, value) in over {
        match (key.as_str(), base.get_mut(&key), value) {
            ("properties", Some(Value::Object(mine)), Value::Object(theirs)) => mine.extend(theirs),
            ("required", Some(Value::Array(mine)), Value::Array(theirs)) => {
                mine.extend(theirs.into_iter().filter(|name| !mine.contains(name)).collect::<Vec<_>>())
            }
            (_, _, value) => _ = base.insert(key, value),
        }
    }
}

/// What Gemini would reject, made acceptable (see `clean_schema`).
fn normalise(out: &mut Map<String, Value>) {
    collapse_any_of(out);
    if let Some(Value::Array(values)) = out.remove("enum") {
        if values.iter().any(Value::is_null) {
            out.insert("nullable".into(), Value::Bool(true));
        }
        let strings: Vec<Value> = values.into_iter().filter(|v| !v.is_null()).collect();
        if !strings.is_empty() && strings.iter().all(Value::is_string) {
            out.entry("type").or_insert_with(|| json!("STRING"));
            out.insert("enum".into(), Value::Array(strings));
        }
    }
    let formats: &[&str] = match out.get("type").and_then(Value::as_str) {
        Some("STRING") => &["enum", "date-time"],
        Some("NUMBER") => &["float", "double"],
        Some("INTEGER") => &["int32", "int64"],
        _ => &[],
    };
    if out.get("format").and_then(Value::as_str).is_none_or(|f| !formats.contains(&f)) {
        out.remove("format");
    }
    if out.get("properties").and_then(Value::as_object).is_some_and(Map::is_empty) {
        out.remove("properties");
    }
    let properties = out.get("properties").and_then(Value::as_object);
    let required: Vec<Value> = out
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|name| name.as_str().is_some_and(|n| properties.is_some_and(|p| p.contains_key(n))))
        .cloned()
        .collect();
    if required.is_empty() {
        out.remove("required");
    } else {
        out.insert("required".into(), Value::Array(required));
    }
}

/// Pydantic's `Optional[X]` is `anyOf: [X, {"type": "null"}]`: the null member becomes
/// `nullable`, and a single remaining member is folded into the schema itself.
fn collapse_any_of(out: &mut Map<String, Value>) {
    let Some(Value::Array(members)) = out.remove("anyOf") else { return };
    let is_null = |m: &Value| {
        m.get("nullable") == Some(&Value::Bool(true)) && m.get("type").is_none() && m.get("anyOf").is_none()
    };
    let (nulls, mut rest): (Vec<Value>, Vec<Value>) = members.into_iter().partition(is_null);
    if !nulls.is_empty() {
        out.insert("nullable".into(), Value::Bool(true));
    }
    match rest.len() {
        0 => {}
        1 => {
            let Some(Value::Object(only)) = rest.pop() else { return };
            for (key, value) in only {
                out.entry(key).or_insert(value);
            }
        }
        _ => _ = out.insert("anyOf".into(), Value::Array(rest)),
    }
}
