//! Some models write their reasoning into the answer as `<think>...</think>` before the
//! answer itself (DeepSeek R1 and Qwen QwQ on several hosts). This moves it into
//! `reasoning_content`, the field other providers use, even when a tag is split across
//! stream chunks. Only a `<think>` at the very start of the content counts, so an answer that
//! merely mentions the tag is left alone.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
enum State {
    /// Nothing but whitespace seen yet: the content may still turn out to start with `<think>`.
    #[default]
    Start,
    Thinking,
    Answer,
}

/// Splits streamed content into (reasoning, answer) pieces.
#[derive(Debug, Default)]
pub struct ThinkSplitter {
    state: State,
    /// Text held back because it may be the start of a tag.
    held: String,
}

impl ThinkSplitter {
    /// Feeds a content piece; returns the reasoning and the answer text it releases.
    pub fn push(&mut self, text: &str) -> (String, String) {
        self.held.push_str(text);
        let (mut reasoning, mut answer) = (String::new(), String::new());
        loop {
            match self.state {
                State::Start => {
                    let trimmed = self.held.trim_start();
                    if let Some(rest) = trimmed.strip_prefix(OPEN) {
                        self.held = rest.to_string();
                        self.state = State::Thinking;
                    } else if OPEN.starts_with(trimmed) {
                        return (reasoning, answer); // `<thi` so far: wait for more
                    } else {
                        self.state = State::Answer;
                    }
                }
                State::Thinking => match self.held.find(CLOSE) {
                    Some(end) => {
                        reasoning.push_str(&self.held[..end]);
                        self.held = self.held[end + CLOSE.len()..].trim_start_matches(['\n', '\r']).to_string();
                        self.state = State::Answer;
                    }
                    None => {
                        let keep = partial_suffix(&self.held, CLOSE);
                        let cut = self.held.len() - keep;
                        reasoning.push_str(&self.held[..cut]);
                        self.held.drain(..cut);
                        return (reasoning, answer);
                    }
                },
                State::Answer => {
                    answer.push_str(&std::mem::take(&mut self.held));
                    return (reasoning, answer);
                }
            }
        }
    }

    /// The end of the content: whatever was held back, as what it was heading to be.
    pub fn finish(&mut self) -> (String, String) {
        let held = std::mem::take(&mut self.held);
        match self.state {
            State::Thinking => (held, String::new()),
            _ => (String::new(), held),
        }
    }

    /// Splits a whole (non-streamed) content; None when it does not start with `<think>`.
    pub fn split_whole(content: &str) -> Option<(String, String)> {
        if !content.trim_start().starts_with(OPEN) {
            return None;
        }
        let mut s = ThinkSplitter::default();
        let (mut reasoning, mut answer) = s.push(content);
        let (r, a) = s.finish();
        reasoning.push_str(&r);
        answer.push_str(&a);
        Some((reasoning, answer))
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of `tag`, at a char
/// boundary.
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len())
        .rev()
        .find(|&n| n <= text.len() && text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pieces: &[&str]) -> (String, String) {
        let mut s = ThinkSplitter::default();
        let (mut r, mut a) = (String::new(), String::new());
        for p in pieces {
            let (x, y) = s.push(p);
            r.push_str(&x);
            a.push_str(&y);
        }
        let (x, y) = s.finish();
        (r + &x, a + &y)
    }

    #[test]
    fn splits_even_when_tags_are_cut_across_chunks() {
        let want = ("plan it".to_string(), "Answer.".to_string());
        assert_eq!(run(&["<think>plan it</think>\nAnswer."]), want);
        assert_eq!(run(&["<th", "ink>pla", "n it</thi", "nk>\n", "Answer."]), want);
        assert_eq!(
            run(&["  <", "t", "h", "i", "n", "k", ">", "plan it", "<", "/", "think>", "Answer."]),
            ("plan it".into(), "Answer.".into())
        );
    }

    #[test]
    fn leaves_other_content_alone() {
        assert_eq!(run(&["Hello ", "<think> is a tag"]), (String::new(), "Hello <think> is a tag".into()));
        assert_eq!(run(&["<", "b>bold</b>"]), (String::new(), "<b>bold</b>".into()));
        assert_eq!(run(&["<think>never closed"]), ("never closed".into(), String::new()));
        assert_eq!(ThinkSplitter::split_whole("plain"), None);
        assert_eq!(ThinkSplitter::split_whole("<think>a</think>b"), Some(("a".into(), "b".into())));
    }
}
