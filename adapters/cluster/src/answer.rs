//! The dialled side of a cross-node stream: another node asks over NATS to forward a request
//! here ([`crate::forward`]); the answer is a ticket for this node's cluster address
//! ([`crate::direct`]) or a stream over NATS ([`crate::pipe`]).

use std::sync::Arc;

use uuid::Uuid;

use crate::Subjects;
use crate::dial::{Answer, Dial, DirectAnswer, Forwarded};
use crate::direct::Direct;
use crate::pipe;
use crate::presence::ClusterView;

/// Answers other nodes' dials: with a ticket for this node's cluster address when it has one
/// and the dialler would connect there (the connection that brings it is served), else
/// with a stream over NATS, which becomes a [`Forwarded`] connection on `accepted`.
pub(crate) async fn answer_dials(
    client: async_nats::Client,
    subjects: Subjects,
    view: Arc<ClusterView>,
    accepted: tokio::sync::mpsc::Sender<Forwarded>,
    direct: Option<Arc<Direct>>,
) -> Result<tokio::task::JoinHandle<()>, crate::JoinError> {
    let subject = subjects.dial_of(view.me());
    let mut dials = client
        .subscribe(subject.clone())
        .await
        .map_err(|source| crate::JoinError::Subscribe { subject, source })?;
    Ok(tokio::spawn(async move {
        use futures_util::StreamExt as _;
        while let Some(message) = dials.next().await {
            let Some(reply) = message.reply.clone() else {
                continue;
            };
            let dial: Dial = match serde_json::from_slice(&message.payload) {
                Ok(dial) => dial,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster: ignored a dial that does not parse");
                    continue;
                }
            };
            let ticket = match &direct {
                Some(direct) if dial.direct => direct.issue(dial.clone()),
                _ => None,
            };
            if let Some(ticket) = ticket {
                answer(&client, reply, String::new(), Some(ticket)).await;
                continue;
            }
            let reply_to = format!(
                "{}.pipe.{}",
                subjects.inbox_prefix(),
                Uuid::new_v4().simple()
            );
            let incoming = match client.subscribe(reply_to.clone()).await {
                Ok(sub) => sub,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster: cannot take a dial");
                    continue;
                }
            };
            let (user, pump) = pipe::ends();
            pipe::pump(
                client.clone(),
                incoming,
                dial.reply_to.clone(),
                pump,
                Arc::from(dial.from.as_str()),
                Arc::clone(&view),
            );
            let forwarded = Forwarded {
                io: Box::new(user),
                remote: dial.remote.parse().ok(),
                local: dial.local.parse().ok(),
                https: dial.https,
                from: dial.from,
            };
            if accepted.send(forwarded).await.is_err() {
                return;
            }
            answer(&client, reply, reply_to, None).await;
        }
    }))
}

async fn answer(
    client: &async_nats::Client,
    reply: async_nats::Subject,
    reply_to: String,
    direct: Option<DirectAnswer>,
) {
    let Ok(answer) = serde_json::to_vec(&Answer { reply_to, direct }) else {
        return;
    };
    if let Err(e) = client.publish(reply, answer.into()).await {
        tracing::warn!(error = %e, "cluster: cannot answer a dial");
    }
}
