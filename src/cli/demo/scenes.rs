//! The tour, a scene at a time. Each scene says what a member does, shows what each member sees,
//! and then what the journal recorded meanwhile (read back from the file, so the narration cannot
//! drift from what happened). A scene that does not go as scripted stops the tour with its reason.
//!
//! To add a scene: write one `async fn` here and call it from [`play`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use vncbot_sandbox::fake_discord::AuditEntry;
use vncbot_sandbox::fake_discord::{self, Call, FakeDiscord, GrantDm, Invocation};
use vncbot_sandbox::mock_cvm::MockCvm;
use vncbot_sandbox::{GUILD, ONCALL_ROLE};

use super::show::{say, show, step};
use super::{ALICE, APPROVALS_CHANNEL, APPROVER_ROLE, BOB, CAROL, DAVE, ERIN};

/// What every scene plays on: the stand-ins, the journal, and what happened so far.
pub struct Stage {
    pub discord: FakeDiscord,
    pub tencent: MockCvm,
    pub journal: PathBuf,
    /// Journal records already narrated.
    narrated: usize,
    /// Scenes so far, for their numbers.
    scenes: usize,
    /// The grants the tour opened, to be ended before it finishes.
    open: Vec<(&'static str, GrantDm)>,
}

/// Why the tour stopped.
pub type Failed = String;

/// Every scene, in order.
pub async fn play(st: &mut Stage) -> Result<(), Failed> {
    autocomplete(st).await?;
    grant(st).await?;
    open_console(st).await?;
    scrub(st).await?;
    refused(st).await?;
    stopped(st).await?;
    approval_request(st).await?;
    approval_press(st).await?;
    approved_open_console(st).await?;
    role_granted(st).await?;
    on_call(st).await?;
    done(st).await?;
    Ok(())
}

impl Stage {
    pub fn new(discord: FakeDiscord, tencent: MockCvm, journal: PathBuf) -> Self {
        Stage {
            discord,
            tencent,
            journal,
            narrated: 0,
            scenes: 0,
            open: Vec::new(),
        }
    }

    fn scene(&mut self, title: &str) {
        self.scenes += 1;
        step(&format!("{}. {title}", self.scenes));
    }

    /// Waits for the journal to record exactly `events` since the last scene, then narrates them
    /// (`journal: seq 3 granted · seq 4 delivered`). Anything else recorded is a tour that did not
    /// go as told.
    async fn journal_says(&mut self, events: &[&str]) -> Result<(), Failed> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let new = loop {
            let new: Vec<Value> = records(&self.journal)
                .into_iter()
                .skip(self.narrated)
                .collect();
            if new.len() >= events.len() || tokio::time::Instant::now() >= deadline {
                break new;
            }
            // The journal is another part's file: read it again shortly.
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let got: Vec<&str> = new
            .iter()
            .map(|r| r["event"].as_str().unwrap_or("?"))
            .collect();
        if got != events {
            return Err(format!(
                "scene {} should have recorded {events:?}, and the journal has {got:?}",
                self.scenes
            ));
        }
        self.narrated += new.len();
        if new.is_empty() {
            say("   journal: nothing recorded");
            return Ok(());
        }
        let told: Vec<String> = new
            .iter()
            .map(|r| format!("seq {} {}", r["seq"], r["event"].as_str().unwrap_or("?")))
            .collect();
        say(&format!("   journal: {}", told.join(" · ")));
        Ok(())
    }

    /// The first call made since `since` that matches.
    async fn next_call(&self, what: &str, since: Instant, f: impl Fn(&Call) -> bool) -> Call {
        self.discord
            .wait_for(Duration::from_secs(20), what, |c| c.at >= since && f(c))
            .await
    }
}

/// The journal's records, as JSON (a line being written is left for the next read).
pub fn records(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map_while(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `/vnc` by a member named `name`, with the demo's reason.
fn vnc(
    user: u64,
    name: &'static str,
    roles: Vec<u64>,
    instance: &'static str,
) -> Invocation<'static> {
    vnc_for(user, name, roles, instance, "INC-4711 web is down")
}

/// `/vnc` with another reason.
fn vnc_for(
    user: u64,
    name: &'static str,
    roles: Vec<u64>,
    instance: &'static str,
    reason: &'static str,
) -> Invocation<'static> {
    let options = vec![("instance", instance), ("reason", reason)];
    Invocation {
        name,
        ..fake_discord::vnc(user, roles, options)
    }
}

async fn autocomplete(st: &mut Stage) -> Result<(), Failed> {
    st.scene("Alice (on-call) types \"web\" in /vnc instance:  (autocomplete, from memory)");
    let t = st.discord.autocomplete(ALICE, vec![ONCALL_ROLE], "web");
    for (label, _) in st.discord.choices(&t).await {
        say(&format!("     {label}"));
    }
    st.journal_says(&[]).await
}

async fn grant(st: &mut Stage) -> Result<(), Failed> {
    st.scene("Alice runs /vnc instance:web-01 reason:\"INC-4711 web is down\"");
    let d = st.discord.clone();
    let t = d.invoke(vnc(ALICE, "alice", vec![ONCALL_ROLE], "web-01"));
    show("only Alice sees: ", &d.reply(&t).await);
    let g = d.grant_dm(ALICE).ok_or("no grant DM was sent")?;
    if let Some(dm) = d
        .calls()
        .into_iter()
        .find(|c| c.method == "POST" && c.path.ends_with(&format!("/{}/messages", g.channel)))
    {
        show("Alice's DM:      ", &dm);
    }
    say("   (nothing asked of Tencent yet: the link is made when Alice presses)");
    st.open.push(("web-01", g));
    st.journal_says(&["granted", "delivered"]).await
}

async fn open_console(st: &mut Stage) -> Result<(), Failed> {
    st.scene("Alice presses Open console");
    let g = st.open[0].1;
    let shown = st.discord.press_result(&st.discord.press_open(&g)).await;
    show("Alice's DM now:  ", &shown);
    st.journal_says(&["requested", "issued", "delivered"]).await
}

async fn scrub(st: &mut Stage) -> Result<(), Failed> {
    st.scene("15 seconds later the dead link is scrubbed, and Open console is back");
    let g = st.open[0].1;
    let scrubbed = st
        .discord
        .wait_for(Duration::from_secs(25), "the scrub", |c| {
            c.method == "PATCH" && c.path.ends_with(&format!("/messages/{}", g.message))
        })
        .await;
    show("Alice's DM now:  ", &scrubbed);
    st.journal_says(&[]).await
}

async fn refused(st: &mut Stage) -> Result<(), Failed> {
    st.scene("Bob, without the on-call role, runs /vnc instance:ins-web00001");
    let t = st.discord.invoke(vnc(BOB, "bob", vec![], "ins-web00001"));
    show("only Bob sees:   ", &st.discord.reply(&t).await);
    st.journal_says(&["denied"]).await
}

async fn stopped(st: &mut Stage) -> Result<(), Failed> {
    st.scene("Alice opens db-01, which is stopped: refused before Tencent is asked");
    let d = st.discord.clone();
    let t = d.invoke(vnc(ALICE, "alice", vec![ONCALL_ROLE], "db-01"));
    d.reply(&t).await;
    let db = d.grant_dm(ALICE).ok_or("no grant DM for db-01")?;
    let answer = d.press_result(&d.press_open(&db)).await;
    show("only Alice sees: ", &answer);
    say(&format!(
        "   Tencent's console action was called {} time(s) in all",
        st.tencent.seen().len()
    ));
    st.open.push(("db-01", db));
    st.journal_says(&["granted", "delivered", "requested", "invalid"])
        .await
}

async fn approval_request(st: &mut Stage) -> Result<(), Failed> {
    st.scene(
        "Alice runs /vnc instance:db-prod reason:\"INC-4712 orders lag\": its rule needs an approver",
    );
    let d = st.discord.clone();
    let since = Instant::now();
    let t = d.invoke(vnc_for(
        ALICE,
        "alice",
        vec![ONCALL_ROLE],
        "db-prod",
        "INC-4712 orders lag",
    ));
    show("only Alice sees: ", &d.reply(&t).await);
    let post = st
        .next_call("the request's post", since, |c| {
            c.method == "POST"
                && c.path == format!("/api/v10/channels/{APPROVALS_CHANNEL}/messages")
        })
        .await;
    show("#approvals:      ", &post);
    let cancel = st
        .next_call("the request's DM", since, |c| {
            c.method == "POST"
                && c.body["components"][0]["components"][0]["custom_id"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("vnc:cancel:"))
        })
        .await;
    show("Alice's DM:      ", &cancel);
    st.journal_says(&["approval_requested", "delivered"]).await
}

async fn approval_press(st: &mut Stage) -> Result<(), Failed> {
    st.scene("Carol (an approver) presses Approve in #approvals");
    let d = st.discord.clone();
    let path = format!("/api/v10/channels/{APPROVALS_CHANNEL}/messages");
    let post = d
        .calls()
        .into_iter()
        .rfind(|c| c.method == "POST" && c.path == path)
        .ok_or("no request was posted")?;
    let custom = post.body["components"][0]["components"][0]["custom_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let message: u64 = post.reply["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or("the request's post has no id")?;
    if !custom.starts_with("vnc:approve:") {
        return Err(format!("the request's first button is {custom:?}"));
    }
    // Her roles are read afresh at the press, as Discord answers them.
    d.set_roles(CAROL, vec![APPROVER_ROLE]);
    d.set_name(CAROL, "carol");
    let since = Instant::now();
    d.press_in_guild(
        CAROL,
        vec![APPROVER_ROLE],
        APPROVALS_CHANNEL,
        message,
        &custom,
    );
    let edited = st
        .next_call("the approved request", since, |c| {
            c.method == "PATCH"
                && c.path == format!("{path}/{message}")
                && c.content().contains("Approved")
        })
        .await;
    show("#approvals now:  ", &edited);
    let dm = st
        .next_call("the approved grant's DM", since, |c| {
            c.method == "POST"
                && c.body["components"][0]["components"][0]["custom_id"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("vnc:open:"))
        })
        .await;
    show("Alice's DM:      ", &dm);
    let g = d.grant_dm(ALICE).ok_or("no grant DM for db-prod")?;
    st.open.push(("db-prod", g));
    st.journal_says(&["approval_vote", "approved", "granted", "delivered"])
        .await
}

async fn approved_open_console(st: &mut Stage) -> Result<(), Failed> {
    st.scene("Alice presses Open console on db-prod");
    let g = st.open.last().map(|(_, g)| *g).ok_or("no grant")?;
    let shown = st.discord.press_result(&st.discord.press_open(&g)).await;
    show("Alice's DM now:  ", &shown);
    st.journal_says(&["requested", "issued", "delivered"]).await
}

async fn role_granted(st: &mut Stage) -> Result<(), Failed> {
    st.scene("Erin (an admin) gives Dave the on-call role in Server Settings: the bot records who gave it");
    let d = st.discord.clone();
    d.set_name(ERIN, "erin");
    d.set_name(DAVE, "dave");
    // What Discord answers for Dave's roles from now on.
    d.set_roles(DAVE, vec![ONCALL_ROLE]);
    d.audit(
        GUILD,
        &AuditEntry::role_given(
            ERIN,
            DAVE,
            ONCALL_ROLE,
            "on-call",
            Some("joins this week's rota"),
        ),
    );
    say("   (from the server's audit log, as it happens; what happened while the bot was down is read at start)");
    st.journal_says(&["role_granted"]).await
}

async fn on_call(st: &mut Stage) -> Result<(), Failed> {
    st.scene(
        "Dave, on call in PagerDuty, runs /vnc instance:db-prod: the rule lets on-call members through without votes",
    );
    let d = st.discord.clone();
    let t = d.invoke(vnc_for(
        DAVE,
        "dave",
        vec![ONCALL_ROLE],
        "db-prod",
        "INC-4713 replica lag",
    ));
    show("only Dave sees:  ", &d.reply(&t).await);
    let g = d.grant_dm(DAVE).ok_or("no grant DM for Dave")?;
    if let Some(dm) = d
        .calls()
        .into_iter()
        .find(|c| c.method == "POST" && c.path.ends_with(&format!("/{}/messages", g.channel)))
    {
        show("Dave's DM:       ", &dm);
    }
    say("   (the journal keeps the evidence: the PagerDuty policy, Dave's level and his shift's end)");
    st.open.push(("db-prod", g));
    st.journal_says(&["granted", "delivered"]).await
}

async fn done(st: &mut Stage) -> Result<(), Failed> {
    st.scene("Each member presses Done on the grants they still hold: the tour leaves none open");
    let open = std::mem::take(&mut st.open);
    for (name, g) in &open {
        let t = st.discord.press_button(g, "done");
        show(
            &format!("{name:<8} DM now:  "),
            &st.discord.press_result(&t).await,
        );
    }
    let ended = vec!["ended"; open.len()];
    st.journal_says(&ended).await
}
