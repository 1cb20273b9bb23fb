//! Autocomplete for `/vnc instance:`: answered from the catalog in memory, within Discord's 3 s,
//! never waiting on Tencent, and listing only what the member's roles may open.

use serenity::all::{
    AutocompleteChoice, CommandInteraction, Context, CreateAutocompleteResponse,
    CreateInteractionResponse,
};

use super::Bot as App;
use crate::ids::Snowflake;

pub async fn run(ctx: &Context, app: &App, ac: &CommandInteraction) {
    let typed = ac
        .data
        .autocomplete()
        .filter(|o| o.name == "instance")
        .map_or("", |o| o.value);
    let roles: Vec<Snowflake> = ac.member.as_ref().map_or_else(Vec::new, |m| {
        m.roles
            .iter()
            .filter_map(|r| Snowflake::new(r.get()))
            .collect()
    });
    let guild = ac.guild_id.and_then(|g| Snowflake::new(g.get()));
    let choices = app
        .core
        .autocomplete(guild, &roles, typed)
        .into_iter()
        .map(|(label, id)| AutocompleteChoice::new(label, id))
        .collect();
    let answer = CreateAutocompleteResponse::new().set_choices(choices);
    if let Err(e) = ac
        .create_response(&ctx.http, CreateInteractionResponse::Autocomplete(answer))
        .await
    {
        tracing::debug!(interaction = %ac.id, error = %e, "could not answer an autocomplete");
    }
}
