//! Fuzz the ChannelData parser: any bytes give a channel in range and data inside the
//! buffer, or a precise error.
#![no_main]

use hpb_turn::channel_data;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match channel_data::parse(data) {
        Ok((channel, payload)) => {
            assert!((channel_data::MIN_CHANNEL..=channel_data::MAX_CHANNEL).contains(&channel));
            assert!(payload.len() + 4 <= data.len());
            assert!(channel_data::looks_like_channel_data(data));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
