//! Request-reply with a result: book a hotel room and wait for the booking, or for the reason
//! it failed.
//!
//! Run with `cargo run -p tidemill-cqrs --example book_hotel_room`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tidemill::{HandlerError, InProcessPubSub, Router};
use tidemill_cqrs::{
    CommandBus, CommandProcessor, Error, Named, ProcessorConfig, RequestReply, RequestReplyConfig,
};

#[derive(Debug, Serialize, Deserialize)]
struct BookRoom {
    room: u32,
    guest: String,
    nights: u32,
}
impl Named for BookRoom {}

#[derive(Debug, Serialize, Deserialize)]
struct Booking {
    booking_id: String,
    price: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();

    let processor = CommandProcessor::with_config(
        &router,
        {
            let pubsub = pubsub.clone();
            move |handler: &str| Ok(pubsub.with_group(handler))
        },
        ProcessorConfig::default().reply_publisher(pubsub.clone()),
    );
    let booked: Arc<Mutex<HashSet<u32>>> = Arc::default();
    processor.handle_with_result("book_room", move |command: BookRoom| {
        let booked = booked.clone();
        async move {
            if !booked.lock().insert(command.room) {
                // Final: answered at once and not retried.
                return Err(HandlerError::drop_message(format!(
                    "room {} is taken",
                    command.room
                )));
            }
            Ok(Booking {
                booking_id: format!("{}-{}", command.room, command.guest),
                price: command.nights * 120,
            })
        }
    })?;

    let run = tokio::spawn({
        let router = router.clone();
        async move { router.run().await }
    });
    router.running().await;

    let requests = RequestReply::with_config(
        CommandBus::new(pubsub.clone()),
        pubsub.clone(),
        RequestReplyConfig::default().timeout(Duration::from_secs(5)),
    );
    for guest in ["ada", "grace"] {
        let command = BookRoom {
            room: 101,
            guest: guest.into(),
            nights: 2,
        };
        match requests.request::<_, Booking>(&command).await {
            Ok(booking) => println!(
                "{guest}: booked {} for {}",
                booking.booking_id, booking.price
            ),
            Err(Error::Remote { message, .. }) => println!("{guest}: {message}"),
            Err(other) => return Err(other.into()),
        }
    }

    router.close().await?;
    run.await??;
    Ok(())
}
