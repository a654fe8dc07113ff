//! Flag evaluation for Baton, as a pure library.
//!
//! This crate owns the model of a flag document and the decision "is this
//! flag on for this context, and which variant does the context get". It
//! speaks Unleash's client-API format (`/api/client/features`) and gives
//! exactly Unleash's answers where the models overlap; the official Unleash
//! client specification runs as its conformance test. It must never do I/O,
//! spawn threads, block or talk to the network: the server's OFREP and Unleash
//! endpoints, and any in-process SDK, wrap it at their own edges. Its only
//! look outside the context is the clock, for a date rule evaluated against
//! a context without `currentTime`, as Unleash does.
//!
//! Use it in two steps, so that the costly part happens once:
//!
//! ```
//! use baton_flags::{Context, FlagSet};
//!
//! let json = r#"{"version": 1, "features": [
//!     {"name": "new-checkout", "enabled": true,
//!      "strategies": [{"name": "flexibleRollout",
//!                      "parameters": {"rollout": "100", "stickiness": "userId", "groupId": "new-checkout"}}]}
//! ]}"#;
//! // Parse and compile once (regexes, versions, dates, CIDRs are read here)...
//! let flags = FlagSet::from_json(json)?;
//! // ...then evaluate as often as needed, without allocating.
//! let context = Context { user_id: Some("42".into()), ..Context::default() };
//! assert!(flags.is_enabled("new-checkout", &context));
//! assert_eq!(flags.get_variant("new-checkout", &context).name, "disabled");
//! # Ok::<(), baton_flags::FlagsError>(())
//! ```
//!
//! A document that parses never fails to compile: a part Baton cannot read
//! (an unknown operator, a broken regex, a missing segment) makes only that
//! part evaluate to "off", and is reported by [`FlagSet::warnings`].

mod address;
mod constraint;
mod context;
mod error;
mod flag_set;
pub mod hash;
pub mod model;
mod strategy;
mod time;
pub mod unleash;
mod variant;

pub use context::Context;
pub use error::{DefinitionWarning, FlagsError};
pub use flag_set::{Evaluation, FlagSet};
pub use model::FlagSpec;
pub use unleash::ClientFeatures;
pub use variant::{Variant, DISABLED_VARIANT};
