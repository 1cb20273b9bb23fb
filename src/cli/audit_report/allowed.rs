//! How a grant was allowed, as the report's "allowed by" column says it: the rule, its roles,
//! the approvers, break-glass with its answer (acknowledged, flagged, overdue), on-call evidence.

use serde::Serialize;
use serde_json::Value;

/// How a grant was allowed. Today's records name the rule by its index; the optional fields are
/// what newer records add, kept as the JSON they were written as.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Allowed {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_roles: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_call: Option<Value>,
    /// Who flagged a break-glass use as not justified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flagged_by: Option<Value>,
    /// A break-glass use went unanswered past `ack_hours`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_overdue: Option<Value>,
}

impl Allowed {
    pub fn is_break_glass(&self) -> bool {
        present(self.break_glass.as_ref())
    }

    pub fn is_acknowledged(&self) -> bool {
        present(self.acknowledged_by.as_ref())
    }

    /// An approver flagged the break-glass use (and nobody acknowledged it).
    pub fn is_flagged(&self) -> bool {
        !self.is_acknowledged() && present(self.flagged_by.as_ref())
    }

    /// Acknowledged or flagged: the first answer stands.
    pub fn is_answered(&self) -> bool {
        self.is_acknowledged() || present(self.flagged_by.as_ref())
    }

    /// One phrase: `rule 2; roles 555…; approved by bob; BREAK-GLASS, NOT acknowledged; on call: …`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = self.rule {
            parts.push(format!("rule {r}"));
        }
        if let Some(v) = self.rule_roles.as_ref().filter(|v| !v.is_null()) {
            parts.push(format!("roles {}", text_of(v)));
        }
        if let Some(v) = self.approvers.as_ref().filter(|v| !v.is_null()) {
            parts.push(format!("approved by {}", text_of(v)));
        }
        if self.is_break_glass() {
            parts.push(match (&self.acknowledged_by, &self.flagged_by) {
                (Some(v), _) if !v.is_null() => {
                    format!("BREAK-GLASS, acknowledged by {}", text_of(v))
                }
                (_, Some(v)) if !v.is_null() => format!("BREAK-GLASS, FLAGGED by {}", text_of(v)),
                _ if present(self.ack_overdue.as_ref()) => {
                    "BREAK-GLASS, NOT acknowledged (overdue)".to_owned()
                }
                _ => "BREAK-GLASS, NOT acknowledged".to_owned(),
            });
        }
        if let Some(v) = self.on_call.as_ref().filter(|v| present(Some(v))) {
            parts.push(format!("on call: {}", text_of(v)));
        }
        parts.join("; ")
    }
}

/// A field that says yes: anything but absent, `null` and `false`.
fn present(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Null) | Some(Value::Bool(false)))
}

/// A JSON value as plain words: strings as they are, lists joined, `{"id","name"}` as `name (id)`.
pub fn text_of(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text_of).collect::<Vec<_>>().join(", "),
        Value::Object(m) => match (m.get("name"), m.get("id")) {
            (Some(n), Some(i)) => format!("{} ({})", text_of(n), text_of(i)),
            _ => m
                .iter()
                .map(|(k, v)| format!("{k}: {}", text_of(v)))
                .collect::<Vec<_>>()
                .join(", "),
        },
        other => other.to_string(),
    }
}
