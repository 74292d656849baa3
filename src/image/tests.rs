use super::*;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn parses_references_like_docker() {
    // (text, registry, path, tag, pinned)
    let cases: &[(&str, &str, &str, Option<&str>, bool)] = &[
        ("alpine", "docker.io", "library/alpine", None, false),
        (
            "alpine:3.20",
            "docker.io",
            "library/alpine",
            Some("3.20"),
            false,
        ),
        ("user/app:1", "docker.io", "user/app", Some("1"), false),
        (
            "registry.example.com/g/p",
            "registry.example.com",
            "g/p",
            None,
            false,
        ),
        (
            "registry.example.com:5000/g/p:1",
            "registry.example.com:5000",
            "g/p",
            Some("1"),
            false,
        ),
        (
            "Registry.Example.com/g/p",
            "registry.example.com",
            "g/p",
            None,
            false,
        ),
        (
            "registry.example.com:443/g/p",
            "registry.example.com",
            "g/p",
            None,
            false,
        ),
        (
            "registry.example.com/Group/Proj:Tag",
            "registry.example.com",
            "group/proj",
            Some("Tag"),
            false,
        ),
        ("localhost:5000/x", "localhost:5000", "x", None, false),
        (
            "registry.example.com/g/sub/p/slim:2",
            "registry.example.com",
            "g/sub/p/slim",
            Some("2"),
            false,
        ),
    ];
    for (text, registry, path, tag, pinned) in cases {
        let r = ImageRef::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(r.registry, *registry, "{text}");
        assert_eq!(r.path, *path, "{text}");
        assert_eq!(r.tag.as_deref(), *tag, "{text}");
        assert_eq!(r.is_pinned(), *pinned, "{text}");
    }
}

#[test]
fn digest_pins() {
    let r = ImageRef::parse(&format!("registry.example.com/g/p@{DIGEST}")).unwrap();
    assert!(r.is_pinned());
    assert_eq!(r.tag, None);
    let r = ImageRef::parse(&format!("registry.example.com/g/p:1@{DIGEST}")).unwrap();
    assert!(r.is_pinned());
    assert_eq!(r.tag.as_deref(), Some("1"));
}

#[test]
fn rejects_what_docker_rejects_with_a_reason() {
    for bad in [
        "",
        "a b",
        "img:${V}",
        "UPPER//x",
        "img@sha256:short",
        ":tag",
    ] {
        let err = ImageRef::parse(bad).expect_err(bad);
        assert!(
            err.to_string().contains("not a valid image reference"),
            "{err}"
        );
    }
}

#[test]
fn registry_aliases_and_default_port() {
    let reg = Registry::new(["registry.example.com", "https://Docker.Example.com:443/"]).unwrap();
    assert_eq!(reg.primary(), "registry.example.com");
    assert!(reg.contains("registry.example.com:443"));
    assert!(reg.contains("docker.example.com"));
    assert!(!reg.contains("registry.example.com:5000"));
    assert!(!reg.contains("docker.io"));
    assert!(Registry::new(Vec::<String>::new()).is_none());
    let default = Registry::default_for_gitlab_host("GitLab.Example.com");
    assert_eq!(default.primary(), "registry.gitlab.example.com");
}

#[test]
fn longest_project_path_wins() {
    let mut index = ProjectIndex::default();
    index.insert("group/proj", 1);
    index.insert("Group/Proj/Tools", 2);
    index.insert("other", 3);
    assert_eq!(index.resolve("group/proj"), Some(&1));
    assert_eq!(index.resolve("group/proj/slim"), Some(&1));
    assert_eq!(index.resolve("group/proj/tools"), Some(&2));
    assert_eq!(index.resolve("group/proj/tools/x"), Some(&2));
    assert_eq!(
        index.resolve("group/projx"),
        None,
        "prefix only at a / boundary"
    );
    assert_eq!(index.resolve("group"), None);
    assert_eq!(index.resolve("other/a/b"), Some(&3));
    index.remove("OTHER");
    assert_eq!(index.resolve("other/a/b"), None);
}

#[test]
fn owner_of_classifies() {
    let reg = Registry::new(["registry.example.com"]).unwrap();
    let mut index = ProjectIndex::default();
    index.insert("g/base", "base");
    let own = |s: &str| owner_of(&ImageRef::parse(s).unwrap(), &reg, &index);
    assert_eq!(
        own("registry.example.com/g/base:1"),
        ImageOwner::Project {
            project: "base",
            pinned: false
        }
    );
    assert_eq!(
        own("registry.example.com/g/base/slim"),
        ImageOwner::Project {
            project: "base",
            pinned: false
        }
    );
    assert_eq!(
        own(&format!("registry.example.com/g/base@{DIGEST}")),
        ImageOwner::Project {
            project: "base",
            pinned: true
        }
    );
    assert_eq!(
        own("registry.example.com/g/nope"),
        ImageOwner::UnknownProject
    );
    assert_eq!(own("g/base"), ImageOwner::External);
    assert_eq!(own("other.example.com/g/base"), ImageOwner::External);
}

proptest::proptest! {
    #[test]
    fn parse_never_panics(text in "\\PC{0,80}") {
        let _ = ImageRef::parse(&text);
    }

    #[test]
    fn resolve_never_panics(path in "[a-z/]{0,30}") {
        let mut index = ProjectIndex::default();
        index.insert("a/b", ());
        let _ = index.resolve(&path);
    }
}
