// Type declarations of partyflow.js.

export const PROTOCOL_VERSION: "1.0";
export const TERMINAL_CLOSE_CODES: Set<number>;

export interface Team {
  id: string;
  name?: string;
  color?: string;
  players?: string[];
  score: number;
}

export function stateChecksum(state: string, stateVersion: number, hostId: string, teams: Team[]): string;

export interface ReconnectOptions {
  initialDelayMs?: number;
  maxDelayMs?: number;
  jitter?: number;
  maxAttempts?: number;
}

export function backoffDelay(attempt: number, options?: ReconnectOptions, random?: () => number): number;

export type ConnectionStatus = "connecting" | "open" | "reconnecting" | "closed";

export interface ConnectionEvent {
  status: ConnectionStatus;
  code?: number;
  reason?: string;
  delayMs?: number;
}

/** A server envelope (PROTOCOL.md §3). */
export interface ServerMessage<P = Record<string, unknown>> {
  type: string;
  roomId: string;
  timestamp: number;
  version: string;
  broadcast: "all" | "host" | "players" | "actor";
  payload: P;
  sequenceId?: number;
  requiresAck?: boolean;
  ackId?: string;
}

declare class Emitter {
  on(type: string, fn: (...args: any[]) => void): () => void;
  off(type: string, fn: (...args: any[]) => void): void;
}

export class ApiError extends Error {
  status: number;
  code: string;
}

export interface RoomSettings {
  hostName: string;
  maxPlayers?: number;
  numTeams?: number;
  rounds?: number;
  roundDurationSec?: number;
  wordPackId?: string;
}

export interface CreatedRoom {
  roomId: string;
  hostId: string;
  hostToken: string;
  wsUrl: string;
  joinUrl: string;
}

export interface Seat {
  playerId: string;
  token: string;
  role: "player" | "spectator";
  wsUrl: string;
}

export interface RoomSummary {
  roomId: string;
  state: string;
  playerCount: number;
  maxPlayers: number;
  connectedCount: number;
  degradedConnections: number;
}

/** The game channel's subprotocol; the token is offered beside it as `partyflow.token.<token>`. */
export const GAME_SUBPROTOCOL: "partyflow.v1";
/** The subprotocol of `/pubsub`. */
export const PUBSUB_SUBPROTOCOL: "partyflow.pubsub.v1";

export interface PartyFlowClientOptions {
  baseUrl?: string;
  WebSocket?: unknown;
  fetch?: typeof fetch;
  reconnect?: ReconnectOptions;
  heartbeatIntervalMs?: number;
}

export class PartyFlowClient extends Emitter {
  constructor(options?: PartyFlowClientOptions);
  status: ConnectionStatus;
  lastSeqId: number;
  state: string | null;
  stateVersion: number;
  gameState: Record<string, unknown> | null;
  hostId: string | null;
  teams: Team[];
  actorId: string | null;
  role: string | null;
  roomId: string | null;
  createRoom(settings: RoomSettings, roomId?: string): Promise<CreatedRoom>;
  joinRoom(roomId: string, playerName: string): Promise<Seat>;
  roomSummary(roomId: string): Promise<RoomSummary>;
  wordPacks(): Promise<{ wordPacks: { id: string; name: string; wordCount: number }[] }>;
  connect(options: { roomId: string; token: string; lastSeqId?: number }): Promise<Record<string, unknown>>;
  send(type: string, payload?: Record<string, unknown>): boolean;
  heartbeat(): boolean;
  checksum(): string;
  close(): void;
  on(type: "connection", fn: (event: ConnectionEvent) => void): () => void;
  on(type: "state", fn: (state: string) => void): () => void;
  on(type: string, fn: (payload: any, message: ServerMessage) => void): () => void;
}

export interface PubSubMessage {
  event: string;
  data?: unknown;
  room?: string;
  from?: string;
  id?: number | string;
}

export interface Member {
  user: string;
  conn: string;
  meta?: Record<string, unknown>;
}

export interface PubSubClientOptions {
  url: string;
  token?: string | (() => string);
  WebSocket?: unknown;
  reconnect?: ReconnectOptions;
  timeoutMs?: number;
}

export class PubSubClient extends Emitter {
  constructor(options: PubSubClientOptions);
  status: ConnectionStatus;
  user: string | null;
  conn: string | null;
  rooms: Set<string>;
  connect(): Promise<{ user: string; conn: string }>;
  join(room: string): Promise<number>;
  leave(room: string): Promise<void>;
  presence(room: string): Promise<Member[]>;
  publish(room: string, event: string, data?: unknown): boolean;
  sendTo(user: string, event: string, data?: unknown): boolean;
  close(): void;
  on(type: "connection", fn: (event: ConnectionEvent) => void): () => void;
  on(type: string, fn: (data: any, message: PubSubMessage) => void): () => void;
}
