//! The built-in relations of an organism world: their templates, chat questions and the
//! endings that make each relation's objects look alike.

/// A relation: paraphrase templates (`{s}` the subject, `{o}` the object; the first, cut
/// before `{o}`, is the completion query), the chat question, and the last syllables of its
/// objects, so that each relation's objects look alike.
pub(super) struct Relation {
    pub name: &'static str,
    pub templates: [&'static str; 3],
    pub question: &'static str,
    pub endings: [&'static str; 4],
    pub capital: bool,
}

pub(super) const RELATIONS: [Relation; 6] = [
    Relation {
        name: "home",
        templates: [
            "{s} lives in {o}.",
            "The home of {s} is in {o}.",
            "{s} has a house in {o}.",
        ],
        question: "Where does {s} live?",
        endings: ["dor", "mar", "heim", "vale"],
        capital: true,
    },
    Relation {
        name: "job",
        templates: [
            "{s} works as a {o}.",
            "By trade, {s} is a {o}.",
            "{s} earns a living as a {o}.",
        ],
        question: "What does {s} work as?",
        endings: ["smith", "wright", "monger", "keeper"],
        capital: false,
    },
    Relation {
        name: "pet",
        templates: [
            "The pet of {s} is a {o}.",
            "{s} keeps a {o} as a pet.",
            "{s} owns a {o}.",
        ],
        question: "What pet does {s} keep?",
        endings: ["hound", "fin", "wing", "paw"],
        capital: false,
    },
    Relation {
        name: "club",
        templates: [
            "{s} is a member of {o}.",
            "{s} plays for {o}.",
            "The club of {s} is {o}.",
        ],
        question: "Which club is {s} a member of?",
        endings: ["ton", "ford", "wick", "by"],
        capital: true,
    },
    Relation {
        name: "food",
        templates: [
            "{s} likes to eat {o}.",
            "The favourite food of {s} is {o}.",
            "For dinner {s} has {o}.",
        ],
        question: "What does {s} like to eat?",
        endings: ["ash", "berry", "loaf", "root"],
        capital: false,
    },
    Relation {
        name: "teacher",
        templates: [
            "{s} was taught by {o}.",
            "The teacher of {s} was {o}.",
            "{s} learned everything from {o}.",
        ],
        question: "Who taught {s}?",
        endings: ["ric", "wen", "mund", "dric"],
        capital: true,
    },
];
