//! Routing: which handlers a call reaches.
//!
//! [`path`] turns any spelling the daemon accepts into one normalised path, [`pattern`] parses the
//! `"METHOD /path"` patterns scripts register, and [`RouteTable`] keeps them in registration order
//! so several hooks on one call run in script-load order.

pub mod path;
pub mod pattern;

pub use path::{NormalPath, PathError};
pub use pattern::{Params, Pattern, PatternError};

/// Patterns with a value each (a hook, an adapter chain …), matched in insertion order.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    routes: Vec<(Pattern, T)>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable { routes: Vec::new() }
    }
}

impl<T> RouteTable<T> {
    /// Append a route; later routes run after earlier ones.
    pub fn add(&mut self, pattern: Pattern, value: T) {
        self.routes.push((pattern, value));
    }

    /// Whether any route is registered.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Every route matching the call, in insertion order, with its captured params.
    pub fn matches<'a>(
        &'a self,
        method: &'a str,
        path: &'a str,
    ) -> impl Iterator<Item = (&'a Pattern, &'a T, Params)> + 'a {
        self.routes
            .iter()
            .filter_map(move |(p, v)| p.matches(method, path).map(|params| (p, v, params)))
    }

    /// All routes, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&Pattern, &T)> {
        self.routes.iter().map(|(p, v)| (p, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_run_in_insertion_order() {
        let mut t = RouteTable::default();
        t.add(Pattern::parse("* /**").unwrap(), 1);
        t.add(Pattern::parse("POST /containers/create").unwrap(), 2);
        t.add(Pattern::parse("GET /containers/json").unwrap(), 3);
        t.add(Pattern::parse("POST /containers/{id}/start").unwrap(), 4);
        let hit: Vec<i32> = t
            .matches("POST", "/containers/create")
            .map(|(_, v, _)| *v)
            .collect();
        assert_eq!(hit, vec![1, 2]);
        let np = NormalPath::parse("/v1.41//containers/abc/start/").unwrap();
        let hit: Vec<(i32, Params)> = t
            .matches("POST", &np.path)
            .map(|(_, v, p)| (*v, p))
            .collect();
        assert_eq!(
            hit,
            vec![
                (1, vec![]),
                (4, vec![("id".to_string(), "abc".to_string())])
            ]
        );
    }
}
