//! "Did you mean": the closest known name to a mistyped one, by edit distance. A dozen lines,
//! not a crate: names here are short (regions, config keys) and lists small.

/// The candidate closest to `word`, if it is close enough to be a typo: at most a third of the
/// word's length in edits (and at least one), compared ignoring case.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (distance(&word, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean `x`?)` when a candidate is close, else nothing.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// Levenshtein distance, in characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_are_suggested_far_ones_are_not() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
        let regions = ["ap-guangzhou", "ap-shanghai", "ap-singapore"];
        assert_eq!(closest("ap-guangzou", regions), Some("ap-guangzhou"));
        assert_eq!(closest("AP-Shanghai", regions), Some("ap-shanghai"));
        assert_eq!(closest("eu-frankfurt", regions), None);
        assert_eq!(
            did_you_mean("regoins", ["regions", "products"]),
            " (did you mean `regions`?)"
        );
        assert_eq!(did_you_mean("zzz", ["regions"]), "");
    }
}
