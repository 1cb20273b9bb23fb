//! What a member sees, as text: Discord's markup rendered (timestamps as times, mentions as
//! names, buttons as `[Label]`), and the demo's way of printing it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use vncbot_sandbox::fake_discord::Call;
use vncbot_sandbox::ONCALL_ROLE;

use super::{ALICE, APPROVER_ROLE, BOB, CAROL};

pub fn say(s: &str) {
    println!("{s}");
}

/// A scene's heading: `── N. title`.
pub fn step(title: &str) {
    println!("\n── {title}");
}

/// Discord's markup as a member reads it: timestamps as times, mentions as names, buttons.
pub fn render(content: &str) -> String {
    let mut out = String::new();
    let mut rest = content;
    while let Some(i) = rest.find("<t:") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 3..];
        let Some(end) = tail.find('>') else {
            out.push_str(&rest[i..]);
            rest = "";
            break;
        };
        let (secs, style) = tail[..end].split_once(':').unwrap_or((&tail[..end], "f"));
        let t = secs.parse::<u64>().unwrap_or(0);
        out.push_str(&if style == "R" {
            relative(t)
        } else {
            vncbot::link::utc_clock(UNIX_EPOCH + Duration::from_secs(t))
        });
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out.replace(&format!("<@{ALICE}>"), "@alice")
        .replace(&format!("<@{BOB}>"), "@bob")
        .replace(&format!("<@{CAROL}>"), "@carol")
        .replace(&format!("<@&{ONCALL_ROLE}>"), "@on-call")
        .replace(&format!("<@&{APPROVER_ROLE}>"), "@approvers")
        .replace("**", "")
        .replace('`', "")
        .replace("\\(", "(")
        .replace("\\)", ")")
        .replace("\\_", "_")
}

fn relative(t: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match t.cmp(&now) {
        std::cmp::Ordering::Greater => format!("in {} s", t - now),
        _ => format!("{} s ago", now - t),
    }
}

/// A message's buttons: `[Open console] [Done]`; a link button shows the start of its link only.
pub fn buttons(body: &Value) -> String {
    let Some(rows) = body["components"].as_array() else {
        return String::new();
    };
    let labels: Vec<String> = rows
        .iter()
        .flat_map(|r| r["components"].as_array().cloned().unwrap_or_default())
        .map(|b| match b["url"].as_str() {
            Some(url) => format!(
                "[{} → {}…]",
                b["label"].as_str().unwrap_or("link"),
                url.chars().take(72).collect::<String>()
            ),
            None => format!("[{}]", b["label"].as_str().unwrap_or("?")),
        })
        .collect();
    labels.join(" ")
}

/// A message as `who` sees it, its buttons under it.
pub fn show(who: &str, c: &Call) {
    let content = render(&c.content());
    for (i, line) in content.lines().enumerate() {
        say(&format!("   {}{line}", if i == 0 { who } else { "   " }));
    }
    let b = buttons(c.message());
    if !b.is_empty() {
        say(&format!("      {b}"));
    }
}
