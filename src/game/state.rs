//! The 13 room states.

/// Where a room is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Created by the host; nobody has joined yet.
    RoomCreated,
    /// Players joining.
    Lobby,
    /// Players choosing teams.
    TeamSetup,
    /// Teams balanced; waiting for the host to confirm.
    ReadyToStart,
    /// 3-2-1 countdown.
    RoundStarting,
    /// A team is explaining; the timer runs.
    RoundActive,
    /// The host paused the round; the timer is stopped.
    RoundPaused,
    /// The round just ended.
    RoundEnded,
    /// Showing the round's scores.
    ScoreReview,
    /// Moving on to the next round.
    ReadyForNext,
    /// All rounds played.
    GameEnded,
    /// Final leaderboard shown.
    FinalResults,
    /// Closed by the host; terminal.
    RoomClosed,
}

impl State {
    /// Every state, in the order of a game.
    pub const ALL: [State; 13] = [
        State::RoomCreated,
        State::Lobby,
        State::TeamSetup,
        State::ReadyToStart,
        State::RoundStarting,
        State::RoundActive,
        State::RoundPaused,
        State::RoundEnded,
        State::ScoreReview,
        State::ReadyForNext,
        State::GameEnded,
        State::FinalResults,
        State::RoomClosed,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::RoomCreated => "ROOM_CREATED",
            State::Lobby => "LOBBY",
            State::TeamSetup => "TEAM_SETUP",
            State::ReadyToStart => "READY_TO_START",
            State::RoundStarting => "ROUND_STARTING",
            State::RoundActive => "ROUND_ACTIVE",
            State::RoundPaused => "ROUND_PAUSED",
            State::RoundEnded => "ROUND_ENDED",
            State::ScoreReview => "SCORE_REVIEW",
            State::ReadyForNext => "READY_FOR_NEXT",
            State::GameEnded => "GAME_ENDED",
            State::FinalResults => "FINAL_RESULTS",
            State::RoomClosed => "ROOM_CLOSED",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether a game is under way (joins become spectators).
    pub fn is_in_game(self) -> bool {
        !matches!(self, State::RoomCreated | State::Lobby)
    }
}
