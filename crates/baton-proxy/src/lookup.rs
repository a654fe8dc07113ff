//! Which target a request goes to: its host's route in the current table,
//! its preview target when asked for (header or preview host), or the hold
//! to wait out first while the route switches. Pure over the table.

use std::sync::Arc;
use std::time::Duration;

use crate::hold::Gate;
use crate::rescue::Refusal;
use crate::route::{Route, Side};
use crate::server::Proxy;
use crate::target::Target;

pub(crate) enum Picked {
    /// Go to this target of this route (whose limits apply).
    Target(Arc<Target>, Arc<Route>),
    /// The route is switching: wait at this gate (at most this long), then
    /// look again.
    Held(Arc<Gate>, Duration),
}

impl Proxy {
    /// The target for a request to `host`, or, if `wait_for_hold` and the
    /// route is held, the hold to wait out first.
    pub(crate) fn pick(
        &self,
        host: &str,
        wants_preview: bool,
        side: Side,
        wait_for_hold: bool,
    ) -> Result<Picked, Refusal> {
        let table = self.current();
        let Some((route, preview_host)) = table.resolve(host) else {
            return Err(Refusal::UnknownHost {
                host: host.to_string(),
            });
        };
        if let Some(message) = &route.spec.maintenance {
            return Err(Refusal::Maintenance {
                message: message.clone(),
            });
        }
        if wait_for_hold && route.gate.is_held() {
            return Ok(Picked::Held(
                Arc::clone(&route.gate),
                route.spec.hold_timeout,
            ));
        }
        match route.pick_for(wants_preview || preview_host, side) {
            Some(target) => Ok(Picked::Target(Arc::clone(target), Arc::clone(route))),
            None => Err(Refusal::NoLiveTarget {
                route: route.spec.key.to_string(),
            }),
        }
    }

    /// The target for a request, held or not: after a hold, or for a retry.
    pub(crate) fn pick_now(
        &self,
        host: &str,
        wants_preview: bool,
        side: Side,
    ) -> Result<(Arc<Target>, Arc<Route>), Refusal> {
        match self.pick(host, wants_preview, side, false)? {
            Picked::Target(target, route) => Ok((target, route)),
            Picked::Held(..) => unreachable!("a hold is only reported when asked for"),
        }
    }
}
