//! What a process writes to storage, and what the disks receive: the two counts SD card wear is
//! judged by. Shared by the load generators (`#[path]`-included, so it is not a bench of its own).

/// Bytes process `pid` (`"self"` for this one) has caused to be written to storage so far
/// (`/proc/PID/io` write_bytes: page-cache writeback it dirtied, not the file system's journal).
pub fn write_bytes(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes written to whole disks (`/proc/diskstats`), the file system's journal included: what an SD
/// card actually sees, from every process (run on an otherwise idle machine).
pub fn device_bytes() -> u64 {
    let whole = |n: &str| {
        let t = n.trim_end_matches(|c: char| c.is_ascii_digit());
        (n.starts_with("vd") || n.starts_with("sd")) && n.len() == 3
            || n.starts_with("mmcblk") && !n.contains('p')
            || n.starts_with("nvme") && !t.ends_with('p')
    };
    std::fs::read_to_string("/proc/diskstats")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && whole(f[2])).then(|| f[9].parse::<u64>().unwrap_or(0) * 512)
        })
        .sum()
}
