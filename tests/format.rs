//! The formatter is idempotent, keeps every comment, and never changes what a
//! recipe means: on every fixture and on generated recipes,
//! `fmt(fmt(x)) == fmt(x)` and `parse(fmt(x)) == parse(x)` up to spans.

use proptest::prelude::*;

use prunex::syntax::ast::File;
use prunex::syntax::fmt::format;
use prunex::syntax::{parse, SourceMap};

fn parse_ok(name: &str, text: &str) -> (File, String) {
    let mut map = SourceMap::new();
    let id = map.add(name, None, text);
    let parsed = parse(map.get(id));
    assert!(
        parsed.is_ok(),
        "{name} does not parse: {:?}\n{text}",
        parsed.errors
    );
    let formatted = format(&parsed.file, map.get(id));
    (parsed.file, formatted)
}

fn comment_texts(f: &File) -> Vec<String> {
    f.comments.iter().map(|c| c.node.clone()).collect()
}

/// The properties every input must have.
fn assert_format_properties(name: &str, text: &str) {
    let (original, once) = parse_ok(name, text);
    let (reparsed, twice) = parse_ok(&format!("{name} (formatted)"), &once);
    assert_eq!(once, twice, "formatting {name} is not idempotent");
    assert_eq!(
        original.items, reparsed.items,
        "formatting {name} changed its meaning:\n{once}"
    );
    assert_eq!(
        comment_texts(&original),
        comment_texts(&reparsed),
        "formatting {name} lost or reordered comments"
    );
}

#[test]
fn fixtures_format_idempotently_and_keep_meaning() {
    insta::glob!("fixtures/ok/**/*.prune", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        assert_format_properties(&path.display().to_string(), &text);
    });
}

#[test]
fn formatted_fixtures_look_canonical() {
    insta::glob!("fixtures/ok/*.prune", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let (_, formatted) = parse_ok("fixture", &text);
        insta::assert_snapshot!(formatted);
    });
}

// ------------------------------------------------------------ generated recipes

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..1000).prop_map(|n| n.to_string()),
        (0u32..100, 0u32..100).prop_map(|(a, b)| format!("{a}.{b}")),
        (1u32..9, 1u32..6).prop_map(|(a, e)| format!("{a}e-{e}")),
        (0u32..100).prop_map(|p| format!("{p}%")),
        Just("$v".to_owned()),
    ]
}

fn fraction() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..99).prop_map(|n| format!("0.{n:02}")),
        (0u32..99).prop_map(|p| format!("{p}%")),
        Just("$v".to_owned()),
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_./*-]{1,12}".prop_map(|s| format!("\"{s}\"")),
        Just("\"with \\\"quotes\\\" and \\\\\"".to_owned()),
        Just("$s".to_owned()),
    ]
}

fn unit() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("epochs"), Just("epoch"), Just("steps"), Just("step")]
}

/// One statement per block kind, as tokens (joined later with random layout).
fn train_stmt() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        number().prop_map(|n| vec!["epochs".into(), n]),
        (
            prop_oneof![Just("sgd"), Just("adam"), Just("adamw")],
            number(),
            number()
        )
            .prop_map(|(o, a, b)| vec![
                "optimizer".into(),
                o.into(),
                "lr".into(),
                a,
                "momentum".into(),
                b
            ]),
        number().prop_map(|n| vec!["weight_decay".into(), n]),
        Just(vec!["nesterov".to_owned()]),
        Just(vec!["lr_schedule".to_owned(), "cosine".to_owned()]),
        number().prop_map(|n| vec!["lr_schedule".into(), "cosine".into(), "min".into(), n]),
        (number(), unit(), number()).prop_map(|(a, u, g)| vec![
            "lr_schedule".into(),
            "step".into(),
            "every".into(),
            a,
            u.into(),
            "gamma".into(),
            g
        ]),
        (number(), unit()).prop_map(|(n, u)| vec!["warmup".into(), n, u.into()]),
        (string(), number()).prop_map(|(s, n)| vec!["lr_mult".into(), s, n]),
    ]
}

fn prune_stmt() -> impl Strategy<Value = Vec<String>> {
    let cmp = prop_oneof![Just(""), Just("<="), Just(">="), Just("=")];
    let word = prop_oneof![Just("ratio"), Just("sparsity")];
    prop_oneof![
        (
            prop_oneof![Just("layer"), Just("group")],
            string(),
            word.clone(),
            cmp,
            fraction()
        )
            .prop_map(|(k, s, w, c, f)| {
                let mut v = vec![k.to_owned(), s, w.to_owned()];
                if !c.is_empty() {
                    v.push(c.to_owned());
                }
                v.push(f);
                v
            }),
        proptest::collection::vec(string(), 1..4).prop_map(|pats| {
            let mut v = vec!["ignore".to_owned()];
            for (i, p) in pats.into_iter().enumerate() {
                if i > 0 {
                    v.push(",".into());
                }
                v.push(p);
            }
            v
        }),
        (
            fraction(),
            fraction(),
            number(),
            unit(),
            prop::option::of(number()),
            prop::option::of(prop_oneof![Just("linear"), Just("cubic"), Just("exp")])
        )
            .prop_map(|(a, b, k, u, until, curve)| {
                let mut v = vec![
                    "schedule".into(),
                    "gradual".into(),
                    a,
                    "->".into(),
                    b,
                    "every".into(),
                    k,
                    u.into(),
                ];
                if let Some(t) = until {
                    v.extend(["until".into(), "epoch".into(), t]);
                }
                if let Some(c) = curve {
                    v.extend(["curve".into(), c.into()]);
                }
                v
            }),
        number().prop_map(|n| vec![
            "schedule".into(),
            "oneshot".into(),
            "at".into(),
            "epoch".into(),
            n
        ]),
        (number(), fraction()).prop_map(|(n, f)| vec![
            "schedule".into(),
            "iterative".into(),
            n,
            "steps".into(),
            "to".into(),
            f
        ]),
        (prop_oneof![Just("local"), Just("global")], fraction()).prop_map(|(s, f)| vec![
            "scope".into(),
            s.into(),
            "max".into(),
            f
        ]),
        number().prop_map(|n| vec!["round_to".into(), n]),
        prop_oneof![Just("sum"), Just("mean"), Just("max")]
            .prop_map(|a| vec!["aggregate".into(), a.into()]),
        number().prop_map(|n| vec!["batches".into(), n]),
        number().prop_map(|n| vec!["penalty".into(), n]),
        fraction().prop_map(|f| vec!["sparsity".into(), f]),
        Just(vec!["strict".to_owned()]),
    ]
}

/// A block of statements; settings that may appear once per block are kept
/// at their first occurrence (rules, ignores and multipliers may repeat).
fn block(head: Vec<String>, stmts: Vec<Vec<String>>) -> Vec<String> {
    let mut v = head;
    v.push("{".into());
    let mut seen = Vec::new();
    for s in stmts {
        let key = s[0].clone();
        if !matches!(key.as_str(), "layer" | "group" | "ignore" | "lr_mult") {
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
        }
        v.extend(s);
    }
    v.push("}".into());
    v
}

fn item() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        string().prop_map(|s| vec!["recipe".into(), s]),
        (0u32..100).prop_map(|n| vec!["seed".into(), n.to_string()]),
        prop_oneof![Just("auto"), Just("cpu"), Just("cuda"), Just("cuda:1")]
            .prop_map(|d| vec!["device".into(), d.into()]),
        number().prop_map(|n| vec!["let".into(), "v".into(), "=".into(), n.replace("$v", "1")]),
        string().prop_map(|s| vec![
            "let".into(),
            "s".into(),
            "=".into(),
            s.replace("$s", "\"x\"")
        ]),
        string().prop_map(|s| vec!["export".into(), s]),
        string().prop_map(|s| vec!["include".into(), s.replace("$s", "\"x.prune\"")]),
        (number(), number(), number(), number(), string()).prop_map(|(c, h, w, k, s)| block(
            vec!["model".into(), "resnet18".into()],
            vec![
                vec![
                    "input".into(),
                    "[".into(),
                    c,
                    ",".into(),
                    h,
                    ",".into(),
                    w,
                    "]".into()
                ],
                vec!["classes".into(), k],
                vec!["weights".into(), s]
            ]
        )),
        (string(), number(), number()).prop_map(|(p, b, m)| block(
            vec!["data".into(), "cifar10".into(), p],
            vec![
                vec!["batch".into(), b],
                vec![
                    "normalize".into(),
                    "mean".into(),
                    m.clone(),
                    "std".into(),
                    m
                ],
                vec!["augment".into(), "crop".into(), "4".into(), "flip".into()],
            ]
        )),
        proptest::collection::vec(train_stmt(), 0..4)
            .prop_map(|s| block(vec!["finetune".into()], s)),
        proptest::collection::vec(train_stmt(), 0..3)
            .prop_map(|s| block(vec!["pretrain".into()], s)),
        (
            prop_oneof![
                Just("weights"),
                Just("channels"),
                Just("blocks"),
                Just("2:4")
            ],
            prop_oneof![
                Just(""),
                Just("l1"),
                Just("l2"),
                Just("taylor"),
                Just("bn_scale"),
                Just("random")
            ],
            proptest::collection::vec(prune_stmt(), 0..5)
        )
            .prop_map(|(g, i, s)| {
                let mut head = vec!["prune".to_owned(), g.to_owned()];
                if !i.is_empty() {
                    head.extend(["by".to_owned(), i.to_owned()]);
                }
                block(head, s)
            }),
        (number(), fraction()).prop_map(|(t, a)| block(
            vec!["distill".into()],
            vec![
                vec![
                    "teacher".into(),
                    "resnet50".into(),
                    "weights".into(),
                    "\"t.safetensors\"".into()
                ],
                vec!["temperature".into(), t],
                vec!["alpha".into(), a]
            ]
        )),
    ]
}

/// Joins tokens with layout chosen by `seps`: spaces, newlines, blank lines
/// and end-of-line comments, wherever the grammar allows white space.
fn layout(tokens: &[String], seps: &[u8]) -> String {
    let mut out = String::new();
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            let prev = &tokens[i - 1];
            // Top-level items need a line break only where the grammar does
            // not otherwise separate them; always breaking before an item
            // keyword keeps generated text close to what people write.
            out.push_str(match seps[i % seps.len()] % 6 {
                _ if prev == "{" && t == "}" => " ",
                0 | 1 => " ",
                2 => "\n",
                3 => "\n\n",
                4 => "  # note\n",
                _ => "\t",
            });
        }
        out.push_str(t);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn generated_recipes_format_idempotently_and_keep_meaning(
        items in proptest::collection::vec(item(), 0..8),
        seps in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let mut text = String::new();
        for it in &items {
            text.push_str(&layout(it, &seps));
            text.push('\n');
        }
        assert_format_properties("generated", &text);
    }

    /// Arbitrary text never makes the parser panic, and every error it
    /// reports points inside the text.
    #[test]
    fn arbitrary_text_never_panics(text in "[a-z0-9 \\n{}\\[\\]\",.:$#%<=>_-]{0,200}") {
        let mut map = SourceMap::new();
        let id = map.add("any", None, text.as_str());
        let parsed = parse(map.get(id));
        for e in &parsed.errors {
            use miette::Diagnostic;
            for l in e.labels().into_iter().flatten() {
                prop_assert!(l.offset() + l.len() <= text.len());
            }
        }
    }
}
