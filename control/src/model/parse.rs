//! Parsing multi-document YAML into objects.

use serde::Deserialize;

use crate::error::{ConfigError, Errors, ObjectRef, Problem};
use crate::model::{ApiServerRoute, GatewayConfig, Object, API_VERSION};

/// Parse every YAML document in `text`. Empty documents are skipped. All errors are
/// collected, each naming the document (or object, once its name is known) and the
/// field path at fault.
pub fn parse_documents(text: &str, source: &str) -> Result<Vec<Object>, Vec<ConfigError>> {
    let mut objects = Vec::new();
    let mut errors = Errors::default();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc_ref = ObjectRef::Document {
            source: source.to_string(),
            index,
        };
        let value = match serde_yaml::Value::deserialize(document) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                errors.push(&doc_ref, "", Problem::Syntax(format!("invalid YAML: {e}")));
                // The YAML stream cannot be resynchronised after a syntax error.
                break;
            }
        };
        match parse_object(value, &doc_ref) {
            Ok(object) => objects.push(object),
            Err(e) => errors.extend([*e]),
        }
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(errors.into_vec())
    }
}

/// Render objects as a multi-document YAML file that [`parse_documents`] reads back as
/// the same objects: how tools and tests write configurations from typed values instead
/// of hand-indented text.
pub fn render_documents(objects: &[Object]) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&match object {
            Object::Gateway(g) => serde_yaml::to_string(g)?,
            Object::Route(r) => serde_yaml::to_string(&**r)?,
        });
    }
    Ok(out)
}

/// Boxed error: a parse error is rare and `ConfigError` is large.
fn parse_object(value: serde_yaml::Value, doc_ref: &ObjectRef) -> Result<Object, Box<ConfigError>> {
    let text_field = |key: &str| {
        value
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let api_version = text_field("apiVersion");
    let kind = text_field("kind");
    // Name errors after the object once its name is readable, even if the rest is broken.
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or_default()
        .to_string();
    let namespace = value
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(|n| n.as_str())
        .unwrap_or_default()
        .to_string();
    let object_ref = if name.is_empty() || kind.is_empty() {
        doc_ref.clone()
    } else {
        ObjectRef::Named {
            kind: kind.clone(),
            namespace,
            name,
        }
    };
    if api_version != API_VERSION {
        return Err(Box::new(ConfigError::new(
            object_ref,
            "apiVersion",
            Problem::UnknownKind(format!("{api_version}/{kind}")),
        )));
    }
    let result = match kind.as_str() {
        "GatewayConfig" => {
            serde_path_to_error::deserialize::<_, GatewayConfig>(value).map(Object::Gateway)
        }
        "ApiServerRoute" => serde_path_to_error::deserialize::<_, ApiServerRoute>(value)
            .map(|r| Object::Route(std::sync::Arc::new(r))),
        _ => {
            return Err(Box::new(ConfigError::new(
                object_ref,
                "kind",
                Problem::UnknownKind(format!("{api_version}/{kind}")),
            )))
        }
    };
    result.map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        Box::new(ConfigError::new(
            object_ref,
            field,
            Problem::Syntax(e.into_inner().to_string()),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_names_object_and_path() {
        let text = "apiVersion: apigate.dev/v1alpha1\nkind: ApiServerRoute\nmetadata: {name: a, namespace: ns}\nspec:\n  hostnames: [x]\n  backends: {static: []}\n  tls: {certFile: c, keyFile: k, bogus: 1}\n  upstream: {caFile: ca}\n";
        let errors = parse_documents(text, "f.yaml").unwrap_err();
        assert_eq!(errors.len(), 1);
        let msg = errors[0].to_string();
        assert!(msg.starts_with("ApiServerRoute ns/a: spec.tls"), "{msg}");
        assert!(msg.contains("unknown field `bogus`"), "{msg}");
    }

    #[test]
    fn malformed_yaml_names_document() {
        let errors = parse_documents("a: [1, 2\n", "cfg.yaml").unwrap_err();
        assert!(errors[0].to_string().starts_with("document #0 of cfg.yaml"));
        assert_eq!(errors[0].problem.label(), "syntax");
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let errors = parse_documents(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
            "f",
        )
        .unwrap_err();
        assert_eq!(errors[0].problem.label(), "unknown_kind");
        assert_eq!(errors[0].field, "apiVersion");
    }

    #[test]
    fn empty_documents_are_skipped() {
        assert!(parse_documents("---\n---\n", "f").unwrap().is_empty());
    }
}
