// The Vercel AI SDK as a React frontend's `useChat` uses it: its DefaultChatTransport posts the
// chat to the agent service's `?protocol=ai-sdk` route, and readUIMessageStream rebuilds the
// assistant's message from the UI message stream, validating every chunk against the SDK's schema.
//
// Usage: node ai_sdk_chat.mjs AI_MODULE BASE_URL API_KEY SESSION_ID MESSAGE
// Prints the rebuilt message as JSON; exits non-zero on any error the SDK reports.

const [aiModule, base, key, sessionId, text] = process.argv.slice(2);
const { DefaultChatTransport, readUIMessageStream } = await import(aiModule);

const transport = new DefaultChatTransport({
  api: `${base}/api/chat?protocol=ai-sdk`,
  headers: { Authorization: `Bearer ${key}` },
});
const stream = await transport.sendMessages({
  trigger: "submit-message",
  chatId: sessionId,
  messageId: undefined,
  messages: [{ id: "m1", role: "user", parts: [{ type: "text", text }] }],
  abortSignal: undefined,
});

const errors = [];
let message;
for await (const snapshot of readUIMessageStream({
  stream,
  terminateOnError: true,
  onError: (error) => errors.push(String(error)),
})) {
  message = snapshot;
}
if (errors.length > 0) {
  console.error(errors.join("\n"));
  process.exit(1);
}
console.log(JSON.stringify(message));
