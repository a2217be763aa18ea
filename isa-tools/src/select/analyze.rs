//! Text analysis for lexical retrieval: splitting identifiers and prose into terms.

/// Words too common in tool descriptions and requests to tell tools apart.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "for", "from", "get", "has",
    "have", "help", "i", "in", "is", "it", "its", "me", "my", "of", "on", "or", "please", "that",
    "the", "this", "to", "use", "user", "users", "want", "what", "which", "with", "you", "your",
    "will", "would", "could", "should", "about", "some", "any", "also", "more", "like", "need",
    "tool", "tools", "provides", "allows", "using",
];

/// Splits text into lower-case terms: on anything that is not a letter or digit, on `_`, `-`,
/// `.` and `/`, and at camelCase boundaries (`getWeatherNow` gives `get`, `weather`, `now`;
/// `HTTPServer` gives `http`, `server`). Drops stop words and one-letter terms, and stems the
/// rest (`flights` and `flight` are one term, `booking` and `book` another).
///
/// ```
/// use isa_tools::select::terms;
/// assert_eq!(terms("searchFlights_v2"), vec!["search", "flight", "v2"]);
/// assert_eq!(terms("booking hotels"), terms("book a hotel"));
/// assert_eq!(terms("HTTPServer.get-status"), vec!["http", "server", "status"]);
/// ```
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        for part in split_camel(word) {
            let lower = part.to_lowercase();
            if lower.chars().count() < 2 || STOP_WORDS.contains(&lower.as_str()) {
                continue;
            }
            out.push(stem(&lower));
        }
    }
    out
}

/// The clauses of a request that asks for several things: split at `and`, `also`, `then`,
/// `as well as`, `plus`, `;` and `,`. Returns nothing when the request has fewer than two clauses
/// with at least two terms each, so single-intent requests are scored once.
///
/// ```
/// use isa_tools::select::clauses;
/// assert_eq!(clauses("latest news about Tesla and its stock price"), vec!["latest news about Tesla", "its stock price"]);
/// assert!(clauses("salt and pepper").is_empty());
/// ```
pub fn clauses(text: &str) -> Vec<String> {
    clause_spans(text)
        .into_iter()
        .map(|span| text[span].to_string())
        .collect()
}

/// [`clauses`] as byte ranges of `text`, each from its first word to its last (a trailing `,`
/// or `;` left out).
pub fn clause_spans(text: &str) -> Vec<std::ops::Range<usize>> {
    const JOINERS: &[&str] = &["and", "also", "then", "plus"];
    // Each word with its byte range in `text`.
    let words: Vec<(&str, usize)> = text
        .split_whitespace()
        .map(|w| (w, w.as_ptr() as usize - text.as_ptr() as usize))
        .collect();
    let bare = |w: &str| {
        w.trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase()
    };
    let mut pieces: Vec<Option<std::ops::Range<usize>>> = vec![None];
    let mut i = 0;
    while i < words.len() {
        let as_well_as = i + 2 < words.len()
            && bare(words[i].0) == "as"
            && bare(words[i + 1].0) == "well"
            && bare(words[i + 2].0) == "as";
        if as_well_as || JOINERS.contains(&bare(words[i].0).as_str()) {
            pieces.push(None);
            i += if as_well_as { 3 } else { 1 };
            continue;
        }
        let (word, start) = words[i];
        let kept = word.trim_end_matches([',', ';']);
        if let Some(piece) = pieces.last_mut() {
            let end = start + kept.len();
            *piece = Some(piece.as_ref().map_or(start, |p| p.start)..end);
        }
        if kept.len() < word.len() {
            pieces.push(None);
        }
        i += 1;
    }
    let pieces: Vec<std::ops::Range<usize>> = pieces
        .into_iter()
        .flatten()
        .filter(|p| terms(&text[p.clone()]).len() >= 2)
        .collect();
    if pieces.len() < 2 { Vec::new() } else { pieces }
}

/// Splits `getHTTPResponse2` into `get`, `HTTP`, `Response2`.
fn split_camel(word: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = word.char_indices().collect();
    let mut parts = Vec::new();
    let mut start = 0;
    for i in 1..chars.len() {
        let (pos, c) = chars[i];
        let prev = chars[i - 1].1;
        let next_lower = chars.get(i + 1).is_some_and(|(_, n)| n.is_lowercase());
        let boundary = (c.is_uppercase() && prev.is_lowercase())
            || (c.is_uppercase() && prev.is_uppercase() && next_lower);
        if boundary {
            parts.push(&word[start..pos]);
            start = pos;
        }
    }
    if start < word.len() {
        parts.push(&word[start..]);
    }
    parts
}

/// Snowball's English (Porter2) stemmer, so `searching`, `searches` and `search` are one term.
fn stem(word: &str) -> String {
    static ENGLISH: std::sync::LazyLock<rust_stemmers::Stemmer> = std::sync::LazyLock::new(|| {
        rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English)
    });
    ENGLISH.stem(word).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_split_multi_intent_requests_only() {
        assert_eq!(
            clauses("Find hotels in Rome, and also check the weather there"),
            vec!["Find hotels in Rome", "check the weather there"]
        );
        assert_eq!(
            clauses("stock prices as well as recent company news"),
            vec!["stock prices", "recent company news"]
        );
        // One intent, or a conjunction inside a short phrase: scored once.
        assert!(clauses("What is the weather in Paris?").is_empty());
        assert!(clauses("rock and roll concerts").is_empty());
        // Spans cover the clause as written, spaces and all.
        let text = "book  a flight,   then find a hotel";
        let spans = clause_spans(text);
        assert_eq!(spans, vec![0..14, 23..35]);
        assert_eq!(&text[spans[0].clone()], "book  a flight");
        assert!(clauses("").is_empty());
    }

    #[test]
    fn splits_identifiers_and_stems() {
        assert_eq!(terms("get_current_weather"), vec!["current", "weather"]);
        assert_eq!(
            terms("listGitHubIssues"),
            vec!["list", "git", "hub", "issu"]
        );
        assert_eq!(terms("Companies and boxes"), terms("company box"));
        assert_eq!(terms("searching searches"), vec!["search", "search"]);
        assert_eq!(terms("status"), terms("statuses"));
        assert_eq!(
            terms("web.fetch-page/v2"),
            vec!["web", "fetch", "page", "v2"]
        );
        assert!(terms("").is_empty());
        assert_eq!(terms("日本語 テキスト"), vec!["日本語", "テキスト"]);
    }
}
