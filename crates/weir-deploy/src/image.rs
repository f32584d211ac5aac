//! Container images of weir artifacts, built here from scratch: a root file system holding the
//! artifact (as `/weir/app`), the shared libraries it links (as `ldd` lists them) and an empty
//! `/tmp`, imported into the engine as `weir-artifact:<digest>`. Nothing is pulled, and an image
//! is built once per artifact.

use std::path::{Path, PathBuf};

use crate::docker::Docker;
use weir_core::{ArtifactDigest, Error, Result};

/// Where the artifact is in its image.
pub const PROGRAM: &str = "/weir/app";

/// The repository of artifact images.
pub const REPOSITORY: &str = "weir-artifact";

/// The image of `artifact`, built and imported unless the engine has it; its reference.
pub fn ensure(docker: &Docker, artifact: &Path) -> Result<String> {
    let digest = ArtifactDigest::of_file_remembered(artifact)?;
    let tag = &digest.hex()[..16];
    let reference = format!("{REPOSITORY}:{tag}");
    if docker.has_image(&reference)? {
        return Ok(reference);
    }
    let rootfs = root_file_system(artifact)?;
    docker.import_image(&rootfs, REPOSITORY, tag)?;
    Ok(reference)
}

/// The shared libraries `program` loads, as `ldd` resolves them (none for a static program).
fn libraries(program: &Path) -> Result<Vec<PathBuf>> {
    let out = std::process::Command::new("ldd").arg(program).output().map_err(|e| {
        Error::external(
            format!("cannot run ldd to find the libraries of {}", program.display()),
            format!("{e}; install ldd (the libc-bin package) on this host"),
            false,
        )
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|line| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path = line.split("=>").nth(1).unwrap_or(line).split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// The root file system of the artifact's image, as a tar archive.
fn root_file_system(artifact: &Path) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let io = |what: &str, path: &Path, e: std::io::Error| Error::io(what, path, e);
    let mut dir = |name: &str, mode: u32| -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(mode);
        header.set_size(0);
        tar.append_data(&mut header, name, std::io::empty())
            .map_err(|e| io("cannot build the image", Path::new(name), e))
    };
    dir("tmp", 0o1777)?;
    dir("weir", 0o755)?;
    let mut file = |inside: &str, from: &Path| -> Result<()> {
        let bytes = std::fs::read(from).map_err(|e| io("cannot read a file for the image", from, e))?;
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o755);
        header.set_size(bytes.len() as u64);
        tar.append_data(&mut header, inside.trim_start_matches('/'), bytes.as_slice())
            .map_err(|e| io("cannot build the image", from, e))
    };
    file(PROGRAM, artifact)?;
    for lib in libraries(artifact)? {
        // A library's own path is where the loader looks; its content comes from the link target.
        file(&lib.display().to_string(), &lib)?;
    }
    tar.into_inner().map_err(|e| Error::internal(format!("cannot build the image: {e}")))
}
