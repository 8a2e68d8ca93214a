//! Word packs: data files shipped with the server, shuffled into a per-game deck.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Deserialize;

/// The packs compiled into the binary from `data/word-packs/`.
const SHIPPED: [&str; 3] = [
    include_str!("../../data/word-packs/default_animals.json"),
    include_str!("../../data/word-packs/kitchen_and_food.json"),
    include_str!("../../data/word-packs/around_the_house.json"),
];

/// One word and how hard it is to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The word itself.
    pub text: String,
    /// `easy`, `medium` or `hard`.
    pub difficulty: &'static str,
}

/// A named list of words.
#[derive(Debug, Clone)]
pub struct WordPack {
    /// Stable id used in the API.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The words, easy ones first.
    pub words: Vec<Word>,
}

#[derive(Deserialize)]
struct PackFile {
    id: String,
    name: String,
    words: Levels,
}

#[derive(Deserialize)]
struct Levels {
    easy: Vec<String>,
    medium: Vec<String>,
    hard: Vec<String>,
}

impl WordPack {
    /// Parses a pack file: `{id, name, words: {easy: [..], medium: [..], hard: [..]}}`.
    pub fn from_json(text: &str) -> Result<WordPack, serde_json::Error> {
        let file: PackFile = serde_json::from_str(text)?;
        let tag = |list: Vec<String>, difficulty| list.into_iter().map(move |text| Word { text, difficulty });
        let words = tag(file.words.easy, "easy").chain(tag(file.words.medium, "medium")).chain(tag(file.words.hard, "hard")).collect();
        Ok(WordPack { id: file.id, name: file.name, words })
    }

    /// The packs shipped with the server. A broken shipped file is a build defect, caught by the
    /// unit tests below.
    pub fn shipped() -> Vec<WordPack> {
        SHIPPED.iter().filter_map(|text| WordPack::from_json(text).ok()).collect()
    }
}

/// A pack's words in a per-game random order, dealt one at a time.
#[derive(Debug, Clone)]
pub struct Deck {
    order: Vec<usize>,
    next: usize,
}

impl Deck {
    /// Shuffles `len` word indices with `seed` (deterministic for tests and replays).
    pub fn shuffled(len: usize, seed: u64) -> Deck {
        let mut order: Vec<usize> = (0..len).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        Deck { order, next: 0 }
    }

    /// The next word index, if any is left.
    pub fn deal(&mut self) -> Option<usize> {
        let word = self.order.get(self.next).copied();
        self.next += usize::from(word.is_some());
        word
    }

    /// How many words were dealt.
    pub fn dealt(&self) -> usize {
        self.next
    }

    /// Deals `n` words unseen (continuing a restored game's deck).
    pub fn skip(&mut self, n: usize) {
        self.next = self.next.saturating_add(n).min(self.order.len());
    }

    /// Words not yet dealt.
    pub fn remaining(&self) -> usize {
        self.order.len() - self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_packs_are_valid_and_large_enough() {
        let packs = WordPack::shipped();
        assert_eq!(packs.len(), SHIPPED.len(), "a shipped pack failed to parse");
        for pack in packs {
            assert!(pack.words.len() >= 150, "{} has {}", pack.id, pack.words.len());
            let mut texts: Vec<_> = pack.words.iter().map(|w| w.text.to_lowercase()).collect();
            texts.sort();
            texts.dedup();
            assert_eq!(texts.len(), pack.words.len(), "{} has duplicates", pack.id);
        }
    }

    #[test]
    fn deck_deals_every_word_once() {
        let mut deck = Deck::shuffled(5, 7);
        let mut dealt: Vec<usize> = std::iter::from_fn(|| deck.deal()).collect();
        assert_eq!(deck.remaining(), 0);
        dealt.sort();
        assert_eq!(dealt, vec![0, 1, 2, 3, 4]);
        let a: Vec<usize> = {
            let mut d = Deck::shuffled(50, 1);
            std::iter::from_fn(|| d.deal()).collect()
        };
        let b: Vec<usize> = {
            let mut d = Deck::shuffled(50, 1);
            std::iter::from_fn(|| d.deal()).collect()
        };
        assert_eq!(a, b, "same seed, same order");
    }
}
