//! Serving one request: the scripted failure if any, the gateway's checks ([`super::signature`]),
//! then the action: `DescribeInstanceVncUrl` here (Tencent's limits, its error codes per product,
//! a fresh link), `DescribeInstances` in [`super::catalog`]. Every request is recorded.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::catalog::describe_instances;
use super::signature::{self, parse_authorization};
use super::{Scripted, Seen, Service, State, DESCRIBE_INSTANCES, LIGHTHOUSE_REGIONS};
use crate::http::{HttpRequest, Reply};

fn request_id() -> String {
    let r = || fastrand::u64(..);
    let (a, b) = (r(), r());
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn error(code: &str, message: &str, rid: &str) -> Reply {
    Reply::json(
        200,
        &json!({"Response": {"Error": {"Code": code, "Message": message}, "RequestId": rid}}),
    )
}

pub(super) async fn handle(state: &Arc<Mutex<State>>, own_host: &str, req: HttpRequest) -> Reply {
    let catalog = req.header("x-tc-action") == Some(DESCRIBE_INSTANCES);
    let scripted = {
        let mut st = state.lock().unwrap();
        if catalog {
            st.catalog_script.pop_front()
        } else {
            st.script.pop_front()
        }
    };
    let mut forced_error = None;
    let mut missing_url = false;
    match scripted {
        Some(Scripted::Status(s)) => {
            record(state, &req, "http", "-");
            return Reply::Respond {
                status: s,
                content_type: "text/html",
                body: b"<html><body>502 Bad Gateway</body></html>".to_vec(),
            };
        }
        Some(Scripted::Redirect(to)) => {
            record(state, &req, "redirect", "-");
            return Reply::Redirect {
                status: 302,
                location: format!("http://{to}/"),
            };
        }
        Some(Scripted::Reset) => {
            record(state, &req, "reset", "-");
            return Reply::Reset;
        }
        Some(Scripted::Delay(d)) => tokio::time::sleep(d).await,
        Some(Scripted::Error(code)) => forced_error = Some(code),
        Some(Scripted::MissingUrl) => missing_url = true,
        None => {}
    }
    let rid = request_id();
    if catalog {
        let verdict = check(state, own_host, &req).and_then(|()| describe_instances(state, &req));
        return match (verdict, forced_error) {
            (Err((code, msg)), _) => {
                record(state, &req, code, &rid);
                error(code, &msg, &rid)
            }
            (Ok(_), Some(code)) => {
                record(state, &req, code, &rid);
                error(code, "scripted failure", &rid)
            }
            (Ok(mut answer), None) => {
                record(state, &req, "ok", &rid);
                answer["RequestId"] = json!(rid);
                Reply::json(200, &json!({ "Response": answer }))
            }
        };
    }
    let verdict = check(state, own_host, &req);
    let reply = match verdict {
        Err((code, msg)) => {
            record(state, &req, code, &rid);
            error(code, &msg, &rid)
        }
        Ok(()) if forced_error.is_some() => {
            let code = forced_error.unwrap();
            record(state, &req, code, &rid);
            error(code, "scripted failure", &rid)
        }
        Ok(()) if missing_url => {
            record(state, &req, "ok-no-url", &rid);
            Reply::json(200, &json!({"Response": {"RequestId": rid}}))
        }
        Ok(()) => {
            let len = state.lock().unwrap().token_len;
            let token: String = (0..len).map(|_| fastrand::alphanumeric()).collect();
            let url = format!("wss%3A%2F%2Fbjvnc.qcloud.com%3A26789%2Fvnc%3Fs%3D{token}");
            record(state, &req, "ok", &rid);
            state.lock().unwrap().issued.push(url.clone());
            // Tencent labels its JSON oddly at times; clients must parse regardless.
            Reply::Respond {
                status: 200,
                content_type: "text/plain",
                body: serde_json::to_vec(
                    &json!({"Response": {"InstanceVncUrl": url, "RequestId": rid}}),
                )
                .unwrap(),
            }
        }
    };
    reply
}

fn record(state: &Arc<Mutex<State>>, req: &HttpRequest, verdict: &str, rid: &str) {
    let action = req.header("x-tc-action").unwrap_or_default().to_owned();
    let catalog = action == DESCRIBE_INSTANCES;
    let product = req
        .header("x-tc-version")
        .and_then(Service::of_version)
        .map_or("?", Service::name)
        .to_owned();
    let signed_service = req
        .header("authorization")
        .and_then(parse_authorization)
        .map_or_else(|| "-".to_owned(), |a| a.service);
    let seen = Seen {
        product,
        signed_service,
        at: req.received_at,
        answered_at: Instant::now(),
        verdict: verdict.to_owned(),
        request_id: rid.to_owned(),
        region: req.header("x-tc-region").unwrap_or_default().to_owned(),
        language: req.header("x-tc-language").unwrap_or_default().to_owned(),
        body: if catalog {
            String::from_utf8_lossy(&req.body).into_owned()
        } else {
            String::new()
        },
        action,
    };
    let mut st = state.lock().unwrap();
    if catalog {
        st.seen_catalog.push(seen);
    } else {
        st.seen.push(seen);
    }
}

type Verdict = Result<(), (&'static str, String)>;

fn check(state: &Arc<Mutex<State>>, own_host: &str, req: &HttpRequest) -> Verdict {
    let fail = |code: &'static str, msg: &str| Err((code, msg.to_owned()));
    let service = signature::verify(state, own_host, req)?;
    let action = req.header("x-tc-action").unwrap_or_default();
    let region = req.header("x-tc-region").unwrap_or_default().to_owned();
    let mut st = state.lock().unwrap();
    let served = match service {
        Service::Cvm => st.regions.contains(&region),
        Service::Lighthouse => LIGHTHOUSE_REGIONS.contains(&region.as_str()),
    };
    if !served {
        return match service {
            Service::Cvm => fail("InvalidParameterValue", "unknown region"),
            Service::Lighthouse => fail("AuthFailure.InvalidRegion", "region not open"),
        };
    }
    if action == DESCRIBE_INSTANCES {
        // Tencent's limit for DescribeInstances: 40 calls a second, counted apart from the
        // console action's (and, here, per product).
        let cutoff = req.received_at - Duration::from_secs(1);
        let window = match service {
            Service::Cvm => &mut st.catalog_window,
            Service::Lighthouse => &mut st.lighthouse_catalog_window,
        };
        while window.front().is_some_and(|t| *t <= cutoff) {
            window.pop_front();
        }
        if window.len() >= 40 {
            return fail("RequestLimitExceeded", "more than 40 requests in a second");
        }
        window.push_back(req.received_at);
        return Ok(());
    }
    // Tencent's limit: 10 calls a second for this action, per account and product, in any
    // window.
    let cutoff = req.received_at - Duration::from_secs(1);
    let window = match service {
        Service::Cvm => &mut st.window,
        Service::Lighthouse => &mut st.lighthouse_window,
    };
    while window.front().is_some_and(|t| *t <= cutoff) {
        window.pop_front();
    }
    if window.len() >= 10 {
        return fail("RequestLimitExceeded", "more than 10 requests in a second");
    }
    window.push_back(req.received_at);
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(Value::Object(o)) => Value::Object(o),
        _ => return fail("InvalidParameter", "body is not a JSON object"),
    };
    if let Some(k) = body
        .as_object()
        .unwrap()
        .keys()
        .find(|k| *k != "InstanceId")
    {
        return Err(("UnknownParameter", format!("unknown parameter {k}")));
    }
    let Some(id) = body["InstanceId"].as_str() else {
        return fail("MissingParameter", "InstanceId");
    };
    if service == Service::Lighthouse {
        if !well_formed_id_of(id, Service::Lighthouse) {
            return fail(
                "InvalidParameterValue.InstanceIdMalformed",
                "malformed instance ID",
            );
        }
        return match st.instances.get(id) {
            Some(i) if i.region != region => {
                fail("ResourceNotFound.InstanceIdNotFound", "not in this region")
            }
            None => fail("ResourceNotFound.InstanceIdNotFound", "no such instance"),
            Some(i) if i.state == "STOPPED" => fail(
                "UnsupportedOperation.InvalidInstanceState",
                "instance is stopped",
            ),
            Some(_) => Ok(()),
        };
    }
    let well_formed = id.len() == 12
        && id.starts_with("ins-")
        && id[4..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !well_formed {
        return fail("InvalidInstanceId.Malformed", "malformed instance ID");
    }
    match st.instances.get(id) {
        Some(i) if i.region != region => fail("InvalidInstanceId.NotFound", "not in this region"),
        None => fail("InvalidInstanceId.NotFound", "no such instance"),
        Some(i) if i.state == "STOPPED" => fail(
            "UnsupportedOperation.InstanceStateStopped",
            "instance is stopped",
        ),
        Some(_) => Ok(()),
    }
}

pub(super) fn well_formed_id_of(id: &str, service: Service) -> bool {
    let prefix = match service {
        Service::Cvm => "ins-",
        Service::Lighthouse => "lhins-",
    };
    id.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == 8
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}
