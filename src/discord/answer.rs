//! Where an answer goes: a command's deferred ephemeral reply, or the message a component (a
//! select menu) sits on. `/vnc` answers either way: typed, or picked from a menu (src/discord/
//! pick.rs).

use std::future::Future;

use serenity::all::{
    CommandInteraction, ComponentInteraction, EditInteractionResponse, Http, Message, UserId,
};

/// An interaction the bot answers by editing its response.
pub trait Answer: Sync {
    /// Who asked.
    fn asker(&self) -> UserId;

    /// Edits the response (the deferred reply, or the component's message).
    fn edit<'a>(
        &'a self,
        http: &'a Http,
        edit: EditInteractionResponse,
    ) -> impl Future<Output = serenity::Result<Message>> + Send + 'a;
}

impl Answer for CommandInteraction {
    fn asker(&self) -> UserId {
        self.user.id
    }

    fn edit<'a>(
        &'a self,
        http: &'a Http,
        edit: EditInteractionResponse,
    ) -> impl Future<Output = serenity::Result<Message>> + Send + 'a {
        self.edit_response(http, edit)
    }
}

impl Answer for ComponentInteraction {
    fn asker(&self) -> UserId {
        self.user.id
    }

    fn edit<'a>(
        &'a self,
        http: &'a Http,
        edit: EditInteractionResponse,
    ) -> impl Future<Output = serenity::Result<Message>> + Send + 'a {
        self.edit_response(http, edit)
    }
}
