//! `DescribeInstances` as Tencent answers it: paging, `InstanceIds`, `Filters`, and each
//! product's instance shape.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::console::well_formed_id_of;
use super::{MockInstance, Service, State};
use crate::http::HttpRequest;

/// The DescribeInstances answer (without RequestId) for a request that passed the checks.
pub(super) fn describe_instances(
    state: &Arc<Mutex<State>>,
    req: &HttpRequest,
) -> Result<Value, (&'static str, String)> {
    let fail = |code: &'static str, msg: &str| Err((code, msg.to_owned()));
    let region = req.header("x-tc-region").unwrap_or_default().to_owned();
    let service = req
        .header("x-tc-version")
        .and_then(Service::of_version)
        .unwrap_or(Service::Cvm);
    let body = match serde_json::from_slice(&req.body) {
        Ok(Value::Object(o)) => o,
        _ => return fail("InvalidParameter", "body is not a JSON object"),
    };
    if let Some(k) = body
        .keys()
        .find(|k| !["Offset", "Limit", "InstanceIds", "Filters"].contains(&k.as_str()))
    {
        return Err(("UnknownParameter", format!("unknown parameter {k}")));
    }
    let int = |k: &str, default: u64| -> Result<u64, (&'static str, String)> {
        match body.get(k) {
            None => Ok(default),
            Some(v) => v.as_u64().ok_or((
                "InvalidParameterValue",
                format!("{k} must be a non-negative integer"),
            )),
        }
    };
    let offset = int("Offset", 0)?;
    let limit = int("Limit", 20)?;
    if !(1..=100).contains(&limit) {
        return fail("InvalidParameterValue.LimitExceeded", "Limit is 1 to 100");
    }
    let ids: Option<Vec<String>> = match body.get("InstanceIds") {
        None => None,
        Some(Value::Array(a)) => {
            let ids: Option<Vec<String>> =
                a.iter().map(|v| v.as_str().map(str::to_owned)).collect();
            let Some(ids) = ids else {
                return fail("InvalidParameterValue", "InstanceIds must be strings");
            };
            if ids.len() > 100 {
                return fail(
                    "InvalidParameterValue.LimitExceeded",
                    "at most 100 InstanceIds",
                );
            }
            if let Some(bad) = ids.iter().find(|i| !well_formed_id_of(i, service)) {
                return Err((
                    match service {
                        Service::Cvm => "InvalidInstanceId.Malformed",
                        Service::Lighthouse => "InvalidParameterValue.InstanceIdMalformed",
                    },
                    format!("malformed instance ID {bad}"),
                ));
            }
            Some(ids)
        }
        Some(_) => return fail("InvalidParameterValue", "InstanceIds must be an array"),
    };
    let mut filters: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(f) = body.get("Filters") {
        if ids.is_some() {
            return fail(
                "InvalidParameterCombination",
                "InstanceIds and Filters cannot be combined",
            );
        }
        let Some(list) = f.as_array() else {
            return fail("InvalidParameterValue", "Filters must be an array");
        };
        if list.len() > 10 {
            return fail("InvalidFilterValue.LimitExceeded", "at most 10 Filters");
        }
        for item in list {
            let name = item["Name"].as_str().unwrap_or_default().to_owned();
            let values: Vec<String> = item["Values"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if values.is_empty() || values.len() > 5 {
                return fail(
                    "InvalidFilterValue.LimitExceeded",
                    "1 to 5 Values per filter",
                );
            }
            let known = [
                "instance-name",
                "instance-id",
                "instance-state",
                "private-ip-address",
                "public-ip-address",
                "tag-key",
            ];
            if !known.contains(&name.as_str()) && !name.starts_with("tag:") {
                return Err(("InvalidFilter", format!("unknown filter {name}")));
            }
            filters.push((name, values));
        }
    }
    let st = state.lock().unwrap();
    let mut matching: Vec<&MockInstance> = st
        .instances
        .values()
        .filter(|i| i.region == region && Service::of_id(&i.id) == service)
        .filter(|i| ids.as_ref().is_none_or(|ids| ids.contains(&i.id)))
        .filter(|i| {
            filters.iter().all(|(name, values)| {
                values.iter().any(|v| match name.as_str() {
                    "instance-name" => i.name == *v,
                    "instance-id" => i.id == *v,
                    "instance-state" => i.state == *v,
                    "private-ip-address" => i.private_ips.contains(v),
                    "public-ip-address" => i.public_ips.as_ref().is_some_and(|p| p.contains(v)),
                    "tag-key" => i.tags.iter().any(|(k, _)| k == v),
                    tag => {
                        let key = &tag["tag:".len()..];
                        i.tags.iter().any(|(k, tv)| k == key && tv == v)
                    }
                })
            })
        })
        .collect();
    matching.sort_by(|a, b| a.id.cmp(&b.id));
    let total = matching.len();
    let page: Vec<Value> = matching
        .into_iter()
        .skip(offset as usize)
        .take(limit as usize)
        .map(MockInstance::to_json)
        .collect();
    Ok(json!({ "TotalCount": total, "InstanceSet": page }))
}
