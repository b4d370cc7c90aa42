//! The protobuf marshaler end to end: bus, processor and request-reply.
#![cfg(feature = "protobuf")]

mod common;

use common::*;
use tidemill::{HandlerResult, InProcessPubSub, Router};
use tidemill_cqrs::{
    BusConfig, CommandBus, CommandProcessor, Named, ProcessorConfig, ProtobufMarshaler,
    RequestReply, RequestReplyConfig, CONTENT_TYPE_KEY,
};

#[derive(Clone, PartialEq, prost::Message)]
struct BookRoom {
    #[prost(uint32, tag = "1")]
    room: u32,
    #[prost(string, tag = "2")]
    guest: String,
}
impl Named for BookRoom {}

#[derive(Clone, PartialEq, prost::Message)]
struct Booking {
    #[prost(string, tag = "1")]
    id: String,
}

#[tokio::test]
async fn protobuf_commands_and_replies() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let processor = CommandProcessor::with_config(
        &router,
        groups(&pubsub),
        ProcessorConfig::default()
            .marshaler(ProtobufMarshaler)
            .reply_publisher(pubsub.clone()),
    );
    processor
        .handle_with_result(
            "book",
            |c: BookRoom, ctx: tidemill_cqrs::Context<ProtobufMarshaler>| async move {
                assert_eq!(
                    ctx.metadata().get(CONTENT_TYPE_KEY),
                    Some("application/protobuf")
                );
                HandlerResult::Ok(Booking {
                    id: format!("{}-{}", c.room, c.guest),
                })
            },
        )
        .unwrap();
    let run = start(&router).await;
    let bus = CommandBus::with_config(
        pubsub.clone(),
        BusConfig::default().marshaler(ProtobufMarshaler),
    );
    let requests = RequestReply::with_config(bus, pubsub.clone(), RequestReplyConfig::default());
    let booking: Booking = requests
        .request(&BookRoom {
            room: 5,
            guest: "ada".into(),
        })
        .await
        .unwrap();
    assert_eq!(booking.id, "5-ada");
    stop(&router, run).await;
}
