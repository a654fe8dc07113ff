//! The API's routes, each added with its method and recorded as it is: the
//! router that serves and the list the OpenAPI test compares with the
//! document are built by the same calls, so a route cannot be served
//! without the test seeing it.

use axum::handler::Handler;
use axum::routing::{self, MethodRouter};
use axum::Router;

pub(crate) struct Routes<S> {
    router: Router<S>,
    served: Vec<(&'static str, &'static str)>,
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Routes<S> {
        Routes {
            router: Router::new(),
            served: Vec::new(),
        }
    }

    pub fn get<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.route("get", path, routing::get(handler))
    }

    pub fn post<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.route("post", path, routing::post(handler))
    }

    pub fn patch<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.route("patch", path, routing::patch(handler))
    }

    pub fn delete<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.route("delete", path, routing::delete(handler))
    }

    /// A route for one method, with layers of its own; `method` names the
    /// method `route` answers (lower case, as OpenAPI writes it).
    pub fn route(
        mut self,
        method: &'static str,
        path: &'static str,
        route: MethodRouter<S>,
    ) -> Self {
        // axum merges method routers added for the same path.
        self.router = self.router.route(path, route);
        self.served.push((method, path));
        self
    }

    pub fn merge(mut self, other: Routes<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.served.extend(other.served);
        self
    }

    pub fn with_state<S2: Clone + Send + Sync + 'static>(self, state: S) -> Routes<S2> {
        Routes {
            router: self.router.with_state(state),
            served: self.served,
        }
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn served(&self) -> &[(&'static str, &'static str)] {
        &self.served
    }

    pub fn into_router(self) -> Router<S> {
        self.router
    }
}
