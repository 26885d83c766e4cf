//! Recognizes Ctrl+Alt+Del in the byte stream of an i8042 keyboard port.
//!
//! Firecracker's `SendCtrlAltDel` action puts the scan-code set 2 make codes
//! of Ctrl (0x14), Alt (0x11) and Del (0xE0 0x71) into its i8042 and raises
//! IRQ 1; QEMU's PS/2 keyboard sends the same keys in set 1 (Ctrl 0x1D, Alt
//! 0x38, Del 0xE0 0x53) when the controller translates, as firmware leaves it.
//! The decoder follows both encodings side by side: a key sequence is
//! recognized when Del goes down while Ctrl and Alt are held in either set.

/// The modifier state of one scan-code set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Held {
    ctrl: bool,
    alt: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Ctrl,
    Alt,
    Del,
    Other,
}

impl Held {
    /// Applies a key event; true if it is Del pressed with Ctrl and Alt held.
    fn apply(&mut self, key: Key, down: bool) -> bool {
        match key {
            Key::Ctrl => self.ctrl = down,
            Key::Alt => self.alt = down,
            Key::Del => return down && self.ctrl && self.alt,
            Key::Other => {}
        }
        false
    }
}

/// Ctrl+Alt+Del detector over raw keyboard bytes (port 0x60).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtrlAltDel {
    /// The previous byte was the 0xE0 prefix.
    extended: bool,
    /// The previous byte was set 2's 0xF0 break prefix.
    release: bool,
    set1: Held,
    set2: Held,
}

impl CtrlAltDel {
    /// A detector with no key held.
    pub const fn new() -> Self {
        CtrlAltDel {
            extended: false,
            release: false,
            set1: Held {
                ctrl: false,
                alt: false,
            },
            set2: Held {
                ctrl: false,
                alt: false,
            },
        }
    }

    /// Feeds one byte; true when it completes Ctrl+Alt+Del.
    pub fn feed(&mut self, byte: u8) -> bool {
        match byte {
            0xe0 => {
                self.extended = true;
                return false;
            }
            0xf0 => {
                self.release = true;
                return false;
            }
            _ => {}
        }
        let (ext, release) = (self.extended, self.release);
        self.extended = false;
        self.release = false;
        // Set 2: make codes, 0xF0 before a break code.
        let key2 = match (ext, byte) {
            (_, 0x14) => Key::Ctrl,
            (_, 0x11) => Key::Alt,
            (true, 0x71) => Key::Del,
            _ => Key::Other,
        };
        let hit2 = self.set2.apply(key2, !release);
        // Set 1: bit 7 marks a break code; there is no 0xF0 prefix.
        let hit1 = if release {
            false
        } else {
            let key1 = match (ext, byte & 0x7f) {
                (_, 0x1d) => Key::Ctrl,
                (_, 0x38) => Key::Alt,
                (true, 0x53) => Key::Del,
                _ => Key::Other,
            };
            self.set1.apply(key1, byte & 0x80 == 0)
        };
        hit1 || hit2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(bytes: &[u8]) -> usize {
        let mut d = CtrlAltDel::new();
        bytes.iter().filter(|&&b| d.feed(b)).count()
    }

    #[test]
    fn firecracker_set2_sequence() {
        // Exactly what Firecracker's SendCtrlAltDel queues.
        assert_eq!(hits(&[0x14, 0x11, 0xe0, 0x71]), 1);
        // Then the releases QEMU's send-key would add.
        assert_eq!(
            hits(&[
                0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14
            ]),
            1
        );
    }

    #[test]
    fn translated_set1_sequence() {
        assert_eq!(hits(&[0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d]), 1);
        // Right Ctrl and right Alt count too.
        assert_eq!(hits(&[0xe0, 0x1d, 0xe0, 0x38, 0xe0, 0x53]), 1);
    }

    #[test]
    fn needs_both_modifiers_held() {
        assert_eq!(hits(&[0x1d, 0xe0, 0x53]), 0);
        assert_eq!(hits(&[0x1d, 0x9d, 0x38, 0xe0, 0x53]), 0);
        assert_eq!(hits(&[0x14, 0xf0, 0x14, 0x11, 0xe0, 0x71]), 0);
        // The keypad's Del (no 0xE0) is not the Delete key.
        assert_eq!(hits(&[0x1d, 0x38, 0x53]), 0);
        assert_eq!(hits(&[0x14, 0x11, 0x71]), 0);
        // Other keys typed in between change nothing.
        assert_eq!(hits(&[0x1e, 0x1c, 0x14, 0x2a, 0x11, 0x9e, 0xe0, 0x71]), 1);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut d = CtrlAltDel::new();
        let mut x = 0x9e37_79b9u32;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let _ = d.feed(x as u8);
        }
    }
}
