use super::*;

/// (name, Dockerfile, expected `(ref, via, line, unresolved)` in order)
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, Via, usize, bool)],
);

use Via::{CopyFrom as C, From as F, RunMount as M};

const CASES: &[Case] = &[
    // Basics
    (
        "plain",
        "FROM alpine:3.20\n",
        &[("alpine:3.20", F, 1, false)],
    ),
    ("no tag", "FROM alpine\n", &[("alpine", F, 1, false)]),
    (
        "lowercase instruction",
        "from alpine\n",
        &[("alpine", F, 1, false)],
    ),
    (
        "mixed case instruction",
        "FrOm alpine\n",
        &[("alpine", F, 1, false)],
    ),
    (
        "leading spaces",
        "   FROM alpine\n",
        &[("alpine", F, 1, false)],
    ),
    (
        "crlf",
        "FROM alpine\r\nRUN x\r\n",
        &[("alpine", F, 1, false)],
    ),
    ("bom", "\u{feff}FROM alpine\n", &[("alpine", F, 1, false)]),
    (
        "no final newline",
        "FROM alpine",
        &[("alpine", F, 1, false)],
    ),
    ("empty file", "", &[]),
    ("only comments", "# hello\n# FROM alpine\n", &[]),
    ("scratch", "FROM scratch\n", &[]),
    ("scratch any case", "FROM SCRATCH\n", &[]),
    (
        "registry with port",
        "FROM reg.example.com:5000/g/p:1\n",
        &[("reg.example.com:5000/g/p:1", F, 1, false)],
    ),
    (
        "digest",
        "FROM alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
        &[(
            "alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            F,
            1,
            false,
        )],
    ),
    (
        "line numbers after blanks",
        "\n\n# c\nFROM a\n\nFROM b\n",
        &[("a", F, 4, false), ("b", F, 6, false)],
    ),
    // Flags and aliases
    (
        "platform flag",
        "FROM --platform=linux/amd64 alpine\n",
        &[("alpine", F, 1, false)],
    ),
    (
        "platform variable",
        "FROM --platform=$BUILDPLATFORM alpine AS b\n",
        &[("alpine", F, 1, false)],
    ),
    (
        "alias",
        "FROM alpine AS build\n",
        &[("alpine", F, 1, false)],
    ),
    (
        "lowercase as",
        "FROM alpine as build\n",
        &[("alpine", F, 1, false)],
    ),
    (
        "stage reference",
        "FROM alpine AS build\nFROM build\n",
        &[("alpine", F, 1, false)],
    ),
    (
        "stage reference case-insensitive",
        "FROM alpine AS Build\nFROM BUILD\n",
        &[("alpine", F, 1, false)],
    ),
    (
        "alias shadows image",
        "FROM golang:1 AS golang\nFROM golang\n",
        &[("golang:1", F, 1, false)],
    ),
    (
        "later alias does not count",
        "FROM build\nFROM alpine AS build\n",
        &[("build", F, 1, false), ("alpine", F, 2, false)],
    ),
    (
        "many stages",
        "FROM a AS x\nFROM b AS y\nFROM x\nFROM y\nFROM c\n",
        &[("a", F, 1, false), ("b", F, 2, false), ("c", F, 5, false)],
    ),
    (
        "from without image",
        "FROM\nFROM alpine\n",
        &[("alpine", F, 2, false)],
    ),
    // COPY --from and RUN --mount
    (
        "copy from image",
        "FROM alpine\nCOPY --from=busybox:1 /bin/sh /sh\n",
        &[("alpine", F, 1, false), ("busybox:1", C, 2, false)],
    ),
    (
        "copy from stage",
        "FROM alpine AS a\nFROM scratch\nCOPY --from=a / /\n",
        &[("alpine", F, 1, false)],
    ),
    (
        "copy from index",
        "FROM alpine\nFROM scratch\nCOPY --from=0 / /\n",
        &[("alpine", F, 1, false)],
    ),
    (
        "copy from future index is an image",
        "FROM alpine\nCOPY --from=5 / /\n",
        &[("alpine", F, 1, false), ("5", C, 2, false)],
    ),
    (
        "copy from with other flags",
        "FROM a\nCOPY --chown=1:1 --from=b:2 --link x y\n",
        &[("a", F, 1, false), ("b:2", C, 2, false)],
    ),
    (
        "copy json form",
        "FROM a\nCOPY --from=b [\"x\", \"y\"]\n",
        &[("a", F, 1, false), ("b", C, 2, false)],
    ),
    (
        "copy without from",
        "FROM a\nCOPY x y\n",
        &[("a", F, 1, false)],
    ),
    (
        "copy from on continuation",
        "FROM a\nCOPY \\\n  --from=b \\\n  x y\n",
        &[("a", F, 1, false), ("b", C, 2, false)],
    ),
    (
        "run mount from image",
        "FROM a\nRUN --mount=type=bind,from=tools:1,target=/t make\n",
        &[("a", F, 1, false), ("tools:1", M, 2, false)],
    ),
    (
        "run mount from stage",
        "FROM a AS s\nRUN --mount=from=s,target=/t make\n",
        &[("a", F, 1, false)],
    ),
    (
        "run mount without from",
        "FROM a\nRUN --mount=type=cache,target=/c make\n",
        &[("a", F, 1, false)],
    ),
    (
        "run two mounts",
        "FROM a\nRUN --mount=from=x --mount=type=bind,from=y make\n",
        &[("a", F, 1, false), ("x", M, 2, false), ("y", M, 2, false)],
    ),
    (
        "run text mentioning from",
        "FROM a\nRUN echo --mount=from=x\n",
        &[("a", F, 1, false)],
    ),
    (
        "add has no from",
        "FROM a\nADD --from=x y z\n",
        &[("a", F, 1, false)],
    ),
    // Global ARGs
    (
        "arg braces",
        "ARG V=3.20\nFROM alpine:${V}\n",
        &[("alpine:3.20", F, 2, false)],
    ),
    (
        "arg dollar",
        "ARG IMG=alpine\nFROM $IMG\n",
        &[("alpine", F, 2, false)],
    ),
    (
        "arg quoted",
        "ARG IMG=\"alpine:1\"\nFROM $IMG\n",
        &[("alpine:1", F, 2, false)],
    ),
    (
        "arg single quoted",
        "ARG IMG='alpine:1'\nFROM $IMG\n",
        &[("alpine:1", F, 2, false)],
    ),
    (
        "arg built from arg",
        "ARG V=1\nARG IMG=\"golang:${V}-alpine\"\nFROM ${IMG}\n",
        &[("golang:1-alpine", F, 3, false)],
    ),
    (
        "arg several on one line",
        "ARG A=x B=y\nFROM $A:$B\n",
        &[("x:y", F, 2, false)],
    ),
    (
        "arg default operator unset",
        "ARG R\nFROM ${R:-lib}/img\n",
        &[("lib/img", F, 2, false)],
    ),
    (
        "arg default operator set",
        "ARG R=mine\nFROM ${R:-lib}/img\n",
        &[("mine/img", F, 2, false)],
    ),
    (
        "arg default operator empty",
        "ARG R=\nFROM ${R:-lib}/img\n",
        &[("lib/img", F, 2, false)],
    ),
    (
        "arg dash operator empty",
        "ARG R=\nFROM img${R-x}\n",
        &[("img", F, 2, false)],
    ),
    (
        "arg alt operator set",
        "ARG S=1\nFROM img${S:+-slim}\n",
        &[("img-slim", F, 2, false)],
    ),
    (
        "arg alt operator unset",
        "ARG S\nFROM img${S:+-slim}\n",
        &[("img", F, 2, false)],
    ),
    (
        "arg prefix removal",
        "ARG P=linux/amd64\nARG A=${P#linux/}\nFROM img:$A\n",
        &[("img:amd64", F, 3, false)],
    ),
    (
        "arg suffix removal",
        "ARG V=1.2.3\nFROM img:${V%.*}\n",
        &[("img:1.2", F, 2, false)],
    ),
    (
        "arg longest suffix removal",
        "ARG V=1.2.3\nFROM img:${V%%.*}\n",
        &[("img:1", F, 2, false)],
    ),
    (
        "arg without default only in the tag",
        "ARG V\nFROM img:${V}\n",
        &[("img", F, 2, false)],
    ),
    (
        "undeclared variable only in the tag",
        "FROM img:$NOPE\n",
        &[("img", F, 1, false)],
    ),
    (
        "stage arg does not affect from",
        "FROM a\nARG V=2\nFROM img:${V}\n",
        &[("a", F, 1, false), ("img", F, 3, false)],
    ),
    (
        "arg resolving to stage",
        "ARG VARIANT=alpine\nFROM a AS base-alpine\nFROM base-${VARIANT}\n",
        &[("a", F, 2, false)],
    ),
    (
        "platform variable names a stage",
        "FROM a AS bin-linux\nFROM a AS bin-windows\nFROM bin-${TARGETOS}\n",
        &[("a", F, 1, false), ("a", F, 2, false)],
    ),
    (
        "platform variable only in the tag",
        "FROM img:${TARGETARCH}\n",
        &[("img", F, 1, false)],
    ),
    (
        "platform variable in the name",
        "FROM ${TARGETARCH}/img\n",
        &[("${TARGETARCH}/img", F, 1, true)],
    ),
    (
        "stage arg without value",
        "FROM a AS b\nARG X\nFROM ${X}\n",
        &[("a", F, 1, false), ("${X}", F, 3, true)],
    ),
    (
        "global whole ref unresolved",
        "ARG X\nFROM a AS b\nFROM ${X}\n",
        &[("a", F, 2, false), ("${X}", F, 3, true)],
    ),
    // BuildKit's shell lexer (frontend/dockerfile/shell/lex.go, getEnv):
    // a variable that is not set expands to the empty string. Only a name
    // that depends on one is unresolved; a tag or digest that does is
    // dropped, since tags are not used for matching.
    (
        "buildkit: unset variant only changes the tag",
        "ARG VARIANT\nFROM registry.example.com/base/python:3.11${VARIANT}\n",
        &[("registry.example.com/base/python", F, 2, false)],
    ),
    (
        "buildkit: unset digest variable drops the digest",
        "ARG DIGEST\nFROM alpine@${DIGEST}\n",
        &[("alpine", F, 2, false)],
    ),
    (
        "buildkit: registry from an unset variable is unresolved",
        "ARG REGISTRY\nFROM ${REGISTRY}/group/app:1\n",
        &[("${REGISTRY}/group/app:1", F, 2, true)],
    ),
    (
        "buildkit: name suffix from an unset variable is unresolved",
        "ARG SUFFIX\nFROM base${SUFFIX}:1\n",
        &[("base${SUFFIX}:1", F, 2, true)],
    ),
    (
        "buildkit: unset variable with a default word",
        "ARG REGISTRY\nFROM ${REGISTRY:-registry.example.com}/app:${TAG}\n",
        &[("registry.example.com/app", F, 2, false)],
    ),
    (
        "buildkit: unset variable names an earlier stage by its literal part",
        "FROM a AS build\nARG V\nFROM build${V}\n",
        &[("a", F, 1, false)],
    ),
    // BuildKit registers every stage before converting any instruction
    // (dockerfile2llb: allDispatchStates is filled first, then COPY --from
    // and RUN --mount from= are looked up with findStateByName and
    // findStateByIndex); a FROM only sees earlier stages (addState).
    (
        "buildkit: copy from a later stage",
        "FROM a AS one\nCOPY --from=two x y\nFROM b AS two\n",
        &[("a", F, 1, false), ("b", F, 3, false)],
    ),
    (
        "buildkit: run mount from a later stage",
        "FROM a\nRUN --mount=type=bind,from=Later,target=/x true\nFROM b AS later\n",
        &[("a", F, 1, false), ("b", F, 3, false)],
    ),
    (
        "buildkit: copy from a later stage by index",
        "FROM a\nCOPY --from=1 x y\nFROM b\n",
        &[("a", F, 1, false), ("b", F, 3, false)],
    ),
    (
        "buildkit: copy from an index past the last stage is an image",
        "FROM a\nCOPY --from=2 x y\nFROM b\n",
        &[("a", F, 1, false), ("2", C, 2, false), ("b", F, 3, false)],
    ),
    (
        "buildkit: from cannot name a later stage",
        "FROM later\nFROM b AS later\n",
        &[("later", F, 1, false), ("b", F, 2, false)],
    ),
    (
        "buildkit: copy from a later stage chosen by a platform variable",
        "FROM a\nCOPY --from=bin-${TARGETOS} x y\nFROM b AS bin-linux\n",
        &[("a", F, 1, false), ("b", F, 3, false)],
    ),
    (
        "escaped dollar",
        "FROM img:\\$V\n",
        &[("img:$V", F, 1, false)],
    ),
    (
        "copy from arg",
        "ARG T=tools:1\nFROM a\nCOPY --from=$T x y\n",
        &[("a", F, 2, false), ("tools:1", C, 3, false)],
    ),
    // CI variables as build args
    (
        "ci registry",
        "ARG CI_REGISTRY\nFROM $CI_REGISTRY/g/base:1\n",
        &[("registry.example.com/g/base:1", F, 2, false)],
    ),
    (
        "ci registry default wins",
        "ARG CI_REGISTRY=other.io\nFROM $CI_REGISTRY/g/base\n",
        &[("other.io/g/base", F, 2, false)],
    ),
    (
        "ci registry undeclared",
        "FROM $CI_REGISTRY/g/base\n",
        &[("$CI_REGISTRY/g/base", F, 1, true)],
    ),
    // Continuations and directives
    (
        "continuation",
        "FROM \\\n  alpine \\\n  AS x\n",
        &[("alpine", F, 1, false)],
    ),
    (
        "continuation with comment",
        "RUN a \\\n# note\n  b\nFROM alpine\n",
        &[("alpine", F, 4, false)],
    ),
    (
        "continuation with blank line",
        "FROM \\\n\n  alpine\n",
        &[("alpine", F, 1, false)],
    ),
    (
        "continuation trailing spaces",
        "FROM \\   \n alpine\n",
        &[("alpine", F, 1, false)],
    ),
    (
        "escape backtick",
        "# escape=`\nFROM mcr.microsoft.com/windows `\n  AS w\nRUN dir C:\\\nFROM w\n",
        &[("mcr.microsoft.com/windows", F, 2, false)],
    ),
    (
        "backtick escape keeps backslash",
        "# escape=`\nRUN copy C:\\ D:\\\nFROM alpine\n",
        &[("alpine", F, 3, false)],
    ),
    (
        "escape directive after comment ignored",
        "# hello\n# escape=`\nFROM a `\nFROM b\n",
        &[("a", F, 3, false), ("b", F, 4, false)],
    ),
    (
        "syntax directive not an image",
        "# syntax=docker/dockerfile:1\nFROM alpine\n",
        &[("alpine", F, 2, false)],
    ),
    (
        "from in comment",
        "# FROM evil\nFROM alpine\n",
        &[("alpine", F, 2, false)],
    ),
    (
        "from in run",
        "FROM alpine\nRUN echo FROM evil\n",
        &[("alpine", F, 1, false)],
    ),
    (
        "from in env",
        "FROM alpine\nENV FROM=evil\n",
        &[("alpine", F, 1, false)],
    ),
    // Heredocs
    (
        "heredoc skipped",
        "FROM a\nRUN <<EOF\nFROM evil\nEOF\nFROM b\n",
        &[("a", F, 1, false), ("b", F, 5, false)],
    ),
    (
        "heredoc dash strips tabs",
        "FROM a\nRUN <<-EOF\n\tFROM evil\n\tEOF\nFROM b\n",
        &[("a", F, 1, false), ("b", F, 5, false)],
    ),
    (
        "heredoc quoted",
        "FROM a\nRUN <<'EOF'\nFROM evil\nEOF\nFROM b\n",
        &[("a", F, 1, false), ("b", F, 5, false)],
    ),
    (
        "heredoc double quoted",
        "FROM a\nRUN <<\"EOF\"\nFROM evil\nEOF\nFROM b\n",
        &[("a", F, 1, false), ("b", F, 5, false)],
    ),
    (
        "two heredocs on one line",
        "FROM a\nCOPY <<A <<B /dst/\nFROM x\nA\nFROM y\nB\nFROM b\n",
        &[("a", F, 1, false), ("b", F, 7, false)],
    ),
    (
        "heredoc with redirect",
        "FROM a\nRUN cat <<EOT > /f\nFROM evil\nEOT\nFROM b\n",
        &[("a", F, 1, false), ("b", F, 5, false)],
    ),
    (
        "shift is no heredoc",
        "FROM a\nRUN echo $((1 << 2))\nFROM b\n",
        &[("a", F, 1, false), ("b", F, 3, false)],
    ),
    (
        "heredoc in from is not one",
        "FROM a\nENV X=<<EOF\nFROM b\n",
        &[("a", F, 1, false), ("b", F, 3, false)],
    ),
    (
        "unterminated heredoc",
        "FROM a\nRUN <<EOF\nFROM evil\n",
        &[("a", F, 1, false)],
    ),
    // Junk never panics and keeps what it can
    (
        "unknown instruction",
        "FROBNICATE x\nFROM a\n",
        &[("a", F, 2, false)],
    ),
    (
        "unbalanced quote",
        "FROM \"alpine\nFROM b\n",
        &[("alpine", F, 1, false), ("b", F, 2, false)],
    ),
    (
        "unterminated brace in the tag",
        "FROM img:${V\n",
        &[("img", F, 1, false)],
    ),
    (
        "unterminated brace in the name",
        "FROM img${V\n",
        &[("img${V", F, 1, true)],
    ),
];

fn run(text: &str, args: &BuildArgs) -> Vec<(String, Via, usize, bool)> {
    extract(text, args)
        .images
        .into_iter()
        .map(|i| (i.reference, i.via, i.line, i.unresolved))
        .collect()
}

#[test]
fn table_cases() {
    assert!(CASES.len() >= 60, "only {} cases", CASES.len());
    let args = BuildArgs::new().with("CI_REGISTRY", "registry.example.com");
    let mut failures = Vec::new();
    for (name, text, expected) in CASES {
        let got = run(text, &args);
        let expected: Vec<_> = expected
            .iter()
            .map(|(r, v, l, u)| (r.to_string(), *v, *l, *u))
            .collect();
        if got != expected {
            failures.push(format!("{name}: got {got:?}, want {expected:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn diagnostics_explain_what_was_skipped() {
    let out = extract("FROBNICATE x\nFROM\nRUN <<EOF\n", &BuildArgs::new());
    let messages: Vec<_> = out
        .diagnostics
        .iter()
        .map(|d| (d.line, d.message.clone()))
        .collect();
    assert!(
        messages
            .iter()
            .any(|(l, m)| *l == 1 && m.contains("FROBNICATE")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|(l, m)| *l == 2 && m.contains("FROM without an image")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|(l, m)| *l == 3 && m.contains("never closed")),
        "{messages:?}"
    );
}

#[test]
fn invalid_utf8_replaced_text_is_handled() {
    let bytes = b"FROM alp\xffine\nFROM b\n";
    let text = String::from_utf8_lossy(bytes);
    let got = run(&text, &BuildArgs::new());
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].0, "b");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
    #[test]
    fn never_panics_on_arbitrary_text(text in "\\PC*") {
        let _ = extract(&text, &BuildArgs::new());
    }

    #[test]
    fn never_panics_on_dockerfile_like_text(
        lines in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Just("FROM ".to_string()),
                "(FROM|from|ARG|COPY|RUN) [-=$#{}:+%a-z<\"' `\\\\]{0,30}",
                "\\$\\{[A-Z]{0,3}[:#%+-]{0,2}[a-z${}]{0,5}\\}?",
                "[ \t]*(EOF|\\\\|`|#.*)",
            ],
            0..30,
        )
    ) {
        let text = lines.join("\n");
        let out = extract(&text, &BuildArgs::new());
        for image in out.images {
            proptest::prop_assert!(image.line >= 1 && image.line <= lines.len().max(1));
        }
    }
}
