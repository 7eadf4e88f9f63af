//! Page tokens for the listing calls.
//!
//! A token is the position (in the listing's order) of the last item of the previous
//! page, written in decimal. It is opaque to clients; a token that does not parse is
//! answered `INVALID_ARGUMENT`.

use taskwire_rpc::Status;

/// Default page size of the listing calls.
pub(crate) const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page size honoured; larger requests are capped.
pub(crate) const MAX_PAGE_SIZE: usize = 1_000;

/// The page size to use for a requested one (0 = default).
pub(crate) fn page_size(requested: u32) -> usize {
    match usize::try_from(requested) {
        Ok(0) => DEFAULT_PAGE_SIZE,
        Ok(n) => n.min(MAX_PAGE_SIZE),
        Err(_) => MAX_PAGE_SIZE,
    }
}

/// The position after which the page starts; `None` for the first page.
pub(crate) fn parse_token(token: &str) -> Result<Option<u64>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token.parse().map(Some).map_err(|_| {
        Status::invalid_argument(format!(
            "page_token {token:?} was not issued by this server"
        ))
    })
}

/// Takes one page from `items`, which are in listing order, each with its position.
/// Returns the page and the next token (empty after the last page).
pub(crate) fn page<T>(items: impl Iterator<Item = (u64, T)>, size: usize) -> (Vec<T>, String) {
    let mut out = Vec::new();
    let mut last = None;
    let mut more = false;
    for (position, item) in items {
        if out.len() == size {
            more = true;
            break;
        }
        last = Some(position);
        out.push(item);
    }
    let token = match (more, last) {
        (true, Some(position)) => position.to_string(),
        _ => String::new(),
    };
    (out, token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_ends_with_a_token_only_when_more_items_follow() {
        let (first, token) = page((1..=5u64).map(|n| (n, n)), 2);
        assert_eq!(first, [1, 2]);
        assert_eq!(token, "2");
        let (last, token) = page((4..=5u64).map(|n| (n, n)), 2);
        assert_eq!(last, [4, 5]);
        assert_eq!(token, "", "no token after the last page");
    }

    #[test]
    fn a_foreign_token_is_invalid_argument_naming_it() {
        let status = parse_token("abc").unwrap_err();
        assert!(status.message().contains("\"abc\""), "{status}");
        assert_eq!(parse_token("").unwrap(), None);
        assert_eq!(page_size(0), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(5_000), MAX_PAGE_SIZE);
    }
}
