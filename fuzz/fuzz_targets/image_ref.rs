//! Arbitrary bytes through the image-reference parser and project lookup.
#![no_main]

use gitlab_docker_autodep::image::{owner_of, ImageRef, ProjectIndex, Registry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(image) = ImageRef::parse(&text) {
        let registry = Registry::new(["registry.example.com"]).expect("a host");
        let mut index = ProjectIndex::default();
        index.insert("group/project", 1u8);
        let _ = owner_of(&image, &registry, &index);
        let _ = image.name();
    }
});
