//! Labels a recording carries (`record --label KEY=VALUE`, e.g. `conns=50
//! config=macvtap`): what a benchmark sweep varies from one recording to
//! the next. Parsed and ordered here; `compare` orders a sweep's
//! recordings by them.

use std::{cmp::Ordering, collections::BTreeMap};

use anyhow::{bail, Result};

/// A recording's labels, by key.
pub type Labels = BTreeMap<String, String>;

/// One `KEY=VALUE`: the key of letters, digits, `_`, `-` and `.`, the value
/// anything but empty.
pub fn parse(s: &str) -> Result<(String, String)> {
    let Some((k, v)) = s.split_once('=') else {
        bail!("label {s:?} has no '=': write KEY=VALUE, e.g. --label conns=50");
    };
    let (k, v) = (k.trim(), v.trim());
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        bail!("label key {k:?} in {s:?}: use letters, digits, '_', '-' or '.', e.g. --label conns=50");
    }
    if v.is_empty() {
        bail!("label {k:?} has an empty value: write {k}=VALUE");
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// Every `--label` of a command line; a key given twice is an error.
pub fn parse_all(args: &[String]) -> Result<Labels> {
    let mut out = Labels::new();
    for a in args {
        let (k, v) = parse(a)?;
        if let Some(old) = out.get(&k) {
            bail!("label {k:?} given twice ({k}={old} and {k}={v}): give each key once");
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// Label values in a sweep's order: numbers numerically (`2` before `10`),
/// numbers before words, words alphabetically.
pub fn cmp_values(a: &str, b: &str) -> Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal).then_with(|| a.cmp(b)),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

/// Two recordings' labels compared key by key in `keys`' order (an
/// absent label after any value).
pub fn cmp_by(keys: &[&str], a: &Labels, b: &Labels) -> Ordering {
    keys.iter()
        .map(|k| match (a.get(*k), b.get(*k)) {
            (Some(x), Some(y)) => cmp_values(x, y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// `conns=50 config=macvtap`, keys in order.
pub fn describe(l: &Labels) -> String {
    l.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_value_and_names_the_fix() {
        assert_eq!(parse("conns=50").unwrap(), ("conns".into(), "50".into()));
        assert_eq!(parse("config=mac=vtap").unwrap().1, "mac=vtap", "only the first '=' splits");
        assert!(parse("conns").unwrap_err().to_string().contains("write KEY=VALUE"));
        assert!(parse("=5").unwrap_err().to_string().contains("label key"));
        assert!(parse("a b=5").unwrap_err().to_string().contains("letters, digits"));
        assert!(parse("conns=").unwrap_err().to_string().contains("empty value"));
        let twice = parse_all(&["conns=1".into(), "conns=2".into()]).unwrap_err().to_string();
        assert!(twice.contains("given twice"), "{twice}");
        assert_eq!(describe(&parse_all(&["z=1".into(), "a=x".into()]).unwrap()), "a=x z=1");
    }

    #[test]
    fn orders_numbers_numerically_then_words() {
        let mut v = vec!["50", "10", "bridge", "1", "2.5", "macvtap"];
        v.sort_by(|a, b| cmp_values(a, b));
        assert_eq!(v, ["1", "2.5", "10", "50", "bridge", "macvtap"]);
        let l = |c: &str, n: &str| parse_all(&[format!("config={c}"), format!("conns={n}")]).unwrap();
        let mut runs = [l("macvtap", "10"), l("bridge", "50"), l("macvtap", "1"), l("bridge", "1")];
        runs.sort_by(|a, b| cmp_by(&["config", "conns"], a, b));
        let got: Vec<String> = runs.iter().map(describe).collect();
        assert_eq!(
            got,
            ["config=bridge conns=1", "config=bridge conns=50", "config=macvtap conns=1", "config=macvtap conns=10"]
        );
    }
}
