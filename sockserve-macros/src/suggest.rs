//! "Did you mean ...?" suggestions for misspelled words, by edit distance.

/// The candidates closest to `word`, best first; empty when none is close.
///
/// A candidate is close when it equals `word` ignoring case, when one is a
/// prefix of the other (`thread` / `threading`, `unix` / `unix_stream`), or when
/// the edit distance (with transpositions: `tpc` is one edit from `tcp`) is at
/// most a third of the word's length, and at least 1.
pub(crate) fn similar<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let word = word.to_ascii_lowercase();
    let candidates: Vec<&str> = candidates.into_iter().collect();
    if let Some(exact) = candidates.iter().find(|c| **c == word) {
        return vec![exact];
    }
    let prefixed: Vec<&str> = candidates
        .iter()
        .copied()
        .filter(|c| word.len().min(c.len()) >= 3 && (c.starts_with(&word) || word.starts_with(c)))
        .collect();
    if !prefixed.is_empty() {
        return prefixed;
    }
    let limit = word.len().max(3).div_ceil(3);
    let scored: Vec<(usize, &str)> = candidates
        .iter()
        .map(|c| (distance(&word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .collect();
    let best = scored.iter().map(|(d, _)| *d).min();
    scored
        .into_iter()
        .filter(|(d, _)| Some(*d) == best)
        .map(|(_, c)| c)
        .collect()
}

/// Formats suggestions as `` `a` ``, `` `a` or `b` ``, `` `a`, `b` or `c` ``.
pub(crate) fn or_list(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// Optimal string alignment distance: insertions, deletions, substitutions and
/// transpositions of adjacent characters each cost 1.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORDS: &[&str] = &[
        "tcp",
        "udp",
        "unix_stream",
        "unix_datagram",
        "sync",
        "threading",
        "forking",
    ];

    fn sim(word: &str) -> Vec<&'static str> {
        similar(word, WORDS.iter().copied())
    }

    #[test]
    fn distances() {
        assert_eq!(distance("tpc", "tcp"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
    }

    #[test]
    fn typical_typos() {
        assert_eq!(sim("tpc"), ["tcp"]);
        assert_eq!(sim("TCP"), ["tcp"]);
        assert_eq!(sim("threding"), ["threading"]);
        assert_eq!(sim("thread"), ["threading"]);
        assert_eq!(sim("threads"), ["threading"]);
        assert_eq!(sim("fork"), ["forking"]);
        assert_eq!(sim("synchronous"), ["sync"]);
        assert_eq!(sim("unix"), ["unix_stream", "unix_datagram"]);
        assert_eq!(sim("unix_dgram"), ["unix_stream", "unix_datagram"]);
        assert_eq!(sim("unix_datagam"), ["unix_datagram"]);
        assert_eq!(sim("udpp"), ["udp"]);
        assert_eq!(sim("http"), ["tcp"]);
    }

    #[test]
    fn unrelated_words_get_nothing() {
        assert!(sim("quic").is_empty());
        assert!(sim("websocket").is_empty());
        assert!(sim("x").is_empty());
    }

    #[test]
    fn or_lists() {
        assert_eq!(or_list(&[]), "");
        assert_eq!(or_list(&["a"]), "`a`");
        assert_eq!(or_list(&["a", "b"]), "`a` or `b`");
        assert_eq!(or_list(&["a", "b", "c"]), "`a`, `b` or `c`");
    }
}
