//! GitLab's offset and keyset pagination, headers included
//! (`GITLAB_API.md` §2).

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::json;

use crate::auth::error;

/// RFC 3986 unreserved characters stay as they are.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Kaminari's count limit: past it, totals are not reported.
const MAX_COUNT: usize = 10_000;
/// Offset pagination of projects stops here.
pub const MAX_OFFSET: usize = 50_000;

pub fn per_page(query: &[(String, String)]) -> usize {
    param(query, "per_page")
        .and_then(|v| v.parse::<i64>().ok())
        .map(|n| if n < 1 { 20 } else { n.min(100) as usize })
        .unwrap_or(20)
}

pub fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn encode_query(query: &[(String, String)]) -> String {
    query
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, QUERY_VALUE),
                utf8_percent_encode(v, QUERY_VALUE)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn with_param(query: &[(String, String)], name: &str, value: String) -> Vec<(String, String)> {
    let mut q: Vec<(String, String)> = query.iter().filter(|(k, _)| k != name).cloned().collect();
    q.push((name.to_string(), value));
    q
}

fn set(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(name, v);
    }
}

/// One page of `items` by `page`/`per_page`, with GitLab's headers.
/// `offset_limit`: the 405 ceiling for this kind of object, if any.
pub fn offset<T: Clone>(
    items: &[T],
    query: &[(String, String)],
    url: &str,
    offset_limit: Option<(usize, &str)>,
) -> Result<(Vec<T>, HeaderMap), Response> {
    let per_page = per_page(query);
    let page = param(query, "page")
        .and_then(|v| v.parse::<i64>().ok())
        .map(|p| p.max(1) as usize)
        .unwrap_or(1);
    let start = (page - 1).saturating_mul(per_page);
    if let Some((limit, kind)) = offset_limit {
        if start > limit {
            return Err(error(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": format!("Offset pagination has a maximum allowed offset of {limit} for requests that return objects of type {kind}. Remaining records can be retrieved using keyset pagination.")}),
            ));
        }
    }
    let total = items.len();
    let slice: Vec<T> = items.iter().skip(start).take(per_page).cloned().collect();
    let total_pages = total.div_ceil(per_page).max(1);
    let has_next = start + per_page < total;
    let has_prev = page > 1;
    let mut headers = HeaderMap::new();
    set(&mut headers, "x-per-page", per_page.to_string());
    set(&mut headers, "x-page", page.to_string());
    set(
        &mut headers,
        "x-next-page",
        if has_next {
            (page + 1).to_string()
        } else {
            String::new()
        },
    );
    set(
        &mut headers,
        "x-prev-page",
        if has_prev {
            (page - 1).to_string()
        } else {
            String::new()
        },
    );
    let link = |p: usize, rel: &str| {
        let q = with_param(
            &with_param(query, "per_page", per_page.to_string()),
            "page",
            p.to_string(),
        );
        format!("<{url}?{}>; rel=\"{rel}\"", encode_query(&q))
    };
    let mut links = Vec::new();
    if has_prev {
        links.push(link(page - 1, "prev"));
    }
    if has_next {
        links.push(link(page + 1, "next"));
    }
    links.push(link(1, "first"));
    if total <= MAX_COUNT {
        set(&mut headers, "x-total", total.to_string());
        set(&mut headers, "x-total-pages", total_pages.to_string());
        links.push(link(total_pages, "last"));
    }
    set(&mut headers, "link", links.join(", "));
    Ok((slice, headers))
}

/// Keyset pagination by id: `items` must already be sorted and filtered
/// past the cursor; the page is the first `per_page`, and `Link rel=next`
/// carries the cursor when more may follow.
pub fn keyset<T: Clone>(
    items: &[T],
    id_of: impl Fn(&T) -> u64,
    query: &[(String, String)],
    url: &str,
    descending: bool,
) -> (Vec<T>, HeaderMap) {
    let per_page = per_page(query);
    let page: Vec<T> = items.iter().take(per_page).cloned().collect();
    let mut headers = HeaderMap::new();
    if items.len() > per_page {
        if let Some(last) = page.last() {
            let (cursor, other) = if descending {
                ("id_before", "id_after")
            } else {
                ("id_after", "id_before")
            };
            let q: Vec<(String, String)> =
                query.iter().filter(|(k, _)| k != other).cloned().collect();
            let q = with_param(&q, cursor, id_of(last).to_string());
            set(
                &mut headers,
                "link",
                format!("<{url}?{}>; rel=\"next\"", encode_query(&q)),
            );
        }
    }
    (page, headers)
}
